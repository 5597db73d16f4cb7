# Generates Tests/HistogramCodecTests/Vectors/python-hdrhistogram-v2.txt, a test vector for the
# V2 codec from another HdrHistogram implementation. Run once by hand, output committed:
#   python3 -m venv /tmp/hdr && /tmp/hdr/bin/pip install hdrhistogram==0.10.8
#   /tmp/hdr/bin/python scripts/make-hdr-test-vector.py 0.10.8 > Tests/HistogramCodecTests/Vectors/python-hdrhistogram-v2.txt
import random, sys
from hdrh.histogram import HdrHistogram
h = HdrHistogram(1, 3600000000000, 3)
random.seed(42)
for i in range(10000):
    h.record_value(random.randint(100, 50_000_000))
h.record_value(1)
h.record_value(3_000_000_000_000, 5)
enc = h.encode().decode()
out = sys.stdout
out.write("# HdrHistogram V2 compressed encoding produced by another implementation, for zapfleet's codec tests.\n")
out.write("# Source: PyPI package hdrhistogram %s (module hdrh), HdrHistogram(1, 3600000000000, 3),\n" % sys.argv[1])
out.write("# 10000 values random.randint(100, 50_000_000) with random.seed(42), then 1 once and 3e12 five times;\n")
out.write("# written by scripts/make-hdr-test-vector.py. Lines: base64, then 'total min max', then 'value count' per bucket.\n")
out.write(enc + "\n")
out.write("%d %d %d\n" % (h.get_total_count(), h.get_min_value(), h.get_max_value()))
for item in h.get_recorded_iterator():
    out.write("%d %d\n" % (item.value_iterated_to, item.count_at_value_iterated_to))
