import CZlib
import Histogram
import HistogramCodec
import ZapPlatform
import ZapRun

/// Histograms a hostile peer would send, encoded by hand: hdrhistogram-swift itself traps on
/// counts this large (its iterator multiplies count by value), which is why the coordinator
/// must refuse them before it builds a histogram.
public enum HistogramFixture {
    /// An empty latency histogram: 1 ns to an hour, 3 significant digits (the engine's).
    public static func empty() -> Histogram<UInt64> { LatencyHistogram.makeLatency() }

    /// A latency histogram (1 ns to an hour, 3 significant digits) of `count` values spread over
    /// forty binary magnitudes, fixed by `seed`.
    public static func random(seed: UInt64, count: Int) -> Histogram<UInt64> {
        var random = SplitMix64(seed: seed)
        var histogram = empty()
        for _ in 0..<count {
            let magnitude = random.next() % 40
            _ = histogram.record(1 + random.next() % (UInt64(1) << magnitude))
        }
        return histogram
    }

    /// The V2 compressed encoding of a latency histogram holding `count` samples of `value` ns.
    public static func encoded(value: UInt64, count: UInt64) -> [UInt8] {
        var one = LatencyHistogram.makeLatency()
        _ = one.record(value)
        // The plain encoding of one sample ends with that sample's count, ZigZag LEB128 of 1: one byte.
        var plain = HistogramV2Codec.encode(one)
        precondition(plain.last == 2, "one sample's count is the last byte")
        plain.removeLast()
        plain += zigZag(Int64(bitPattern: count))
        let length = UInt32(plain.count - 40)
        for index in 0..<4 { plain[4 + index] = UInt8(truncatingIfNeeded: length >> (24 - 8 * index)) }
        var compressedLength = compressBound(uLong(plain.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        let status = compressed.withUnsafeMutableBufferPointer { target in
            plain.withUnsafeBufferPointer {
                compress2(target.baseAddress, &compressedLength, $0.baseAddress, uLong($0.count), Z_DEFAULT_COMPRESSION)
            }
        }
        precondition(status == Z_OK)
        var bytes: [UInt8] = [0x1c, 0x84, 0x93, 0x14]
        for shift in [24, 16, 8, 0] { bytes.append(UInt8(truncatingIfNeeded: UInt32(compressedLength) >> UInt32(shift))) }
        return bytes + compressed[0..<Int(compressedLength)]
    }

    /// HdrHistogram's ZigZag LEB128: seven bits a byte for eight bytes, then a ninth of eight bits.
    static func zigZag(_ signed: Int64) -> [UInt8] {
        var value = UInt64(bitPattern: (signed << 1) ^ (signed >> 63))
        var bytes: [UInt8] = []
        for _ in 0..<8 {
            if value >> 7 == 0 { return bytes + [UInt8(value)] }
            bytes.append(UInt8(value & 0x7f) | 0x80)
            value >>= 7
        }
        return bytes + [UInt8(truncatingIfNeeded: value)]
    }
}
