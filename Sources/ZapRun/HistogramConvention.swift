import Histogram

/// The one convention every zapfleet output reports a histogram's statistics by: HdrHistogram's
/// own (Java's `getValueAtPercentile`, `getMaxValue`, `getMinValue`, and the `.hgrm` writer).
///
/// A value stands for its whole bucket of equivalent values: a percentile and the maximum are the
/// **highest** value equivalent to their bucket, the minimum the **lowest**. These depend on the
/// bucket counts alone, so a histogram reports the same figures before and after a trip through
/// the V2 encoding (which keeps counts, not the exact values recorded), and a percentile is never
/// above the maximum. The table, `report.json`, the objectives, `.hgrm` and `report.html` all
/// read them from here.
extension Histogram {
    /// The highest value equivalent to the bucket that holds the `percentile`th recorded value
    /// (the lowest equivalent for percentile 0); 0 for an empty histogram.
    public func conventionalValue(atPercentile percentile: Double) -> UInt64 {
        guard totalCount > 0 else { return 0 }
        // One ulp below, as HdrHistogram does, so 99.9 × count does not round past its bucket.
        let requested = Swift.min(Swift.max(percentile.nextDown, 0), 100)
        let countAtPercentile = Swift.max(1, UInt64((requested * Double(totalCount) / 100).rounded(.up)))
        var seen: UInt64 = 0
        for bucket in recordedValues() {
            seen += UInt64(bucket.count)
            // `bucket.value` is already the bucket's highest equivalent value.
            if seen >= countAtPercentile { return percentile == 0 ? lowestEquivalentForValue(bucket.value) : bucket.value }
        }
        return conventionalMax
    }

    /// The highest value equivalent to the largest value recorded; 0 for an empty histogram.
    public var conventionalMax: UInt64 { totalCount == 0 ? 0 : max }

    /// The lowest value equivalent to the smallest value recorded; 0 for an empty histogram.
    public var conventionalMin: UInt64 { totalCount == 0 ? 0 : lowestEquivalentForValue(min) }
}
