#!/usr/bin/env python3
"""Reads a zapfleet shards.hlog with HdrHistogram's own Python log reader (PyPI hdrhistogram)
and prints every interval it reads as JSON: tag, start (seconds since the log's StartTime),
total count and buckets as [highest equivalent value, count] pairs.

    read_hlog.py RUN_DIR/shards.hlog
"""
import json
import sys

from hdrh.log import HistogramLogReader
from hdrh.histogram import HdrHistogram


def main():
    reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3_600_000_000_000, 3))
    intervals = []
    while True:
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            break
        intervals.append({
            "tag": histogram.get_tag(),
            "start": histogram.get_start_time_stamp() / 1000 - reader.start_time_sec,
            "count": histogram.get_total_count(),
            "buckets": [[item.value_iterated_to, item.count_at_value_iterated_to]
                        for item in histogram.get_recorded_iterator()],
        })
    json.dump({"start_time": reader.start_time_sec, "intervals": intervals}, sys.stdout)


if __name__ == "__main__":
    main()
