import CZlib
import Foundation
import Histogram

/// Why bytes could not be decoded as an HdrHistogram.
public struct HistogramCodecError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What was wrong.
    public enum Code: String, Sendable {
        /// Too short for the header, or the payload length disagrees with the bytes.
        case truncated
        /// The cookie is not V2 (compressed or not).
        case unknownCookie
        /// Header parameters outside what a histogram can have.
        case invalidParameters
        /// DEFLATE data that does not inflate, or inflates past the limit.
        case badCompression
        /// Counts that do not fit the histogram (negative, past the last bucket, malformed varint).
        case badCounts
        /// Text that is not base64.
        case badBase64
    }

    /// What was wrong.
    public let code: Code
    /// Details for a person.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code.rawValue): \(message)" }
}

/// A V2 histogram decoded to its parameters and non-empty buckets, without building a
/// `Histogram` (whose creation allocates and zeroes every bucket): the cheap form to validate
/// and then add into a running total.
public struct DecodedHistogram: Sendable, Equatable {
    /// Lowest discernible value.
    public var lowestDiscernibleValue: UInt64
    /// Highest trackable value.
    public var highestTrackableValue: UInt64
    /// Significant digits.
    public var significantDigits: SignificantDigits
    /// The lowest value of each non-empty bucket, and its count, in increasing order.
    public var buckets: [(value: UInt64, count: UInt64)]

    /// Total samples.
    public var totalCount: UInt64 { buckets.reduce(0) { $0 &+ $1.count } }
    /// The lowest value of the highest non-empty bucket (0 when empty).
    public var maxBucketValue: UInt64 { buckets.last?.value ?? 0 }

    /// Adds every sample into `histogram`, which must have the same parameters.
    /// - Returns: false, adding nothing, if the parameters differ.
    @discardableResult
    public func add(into histogram: inout Histogram<UInt64>) -> Bool {
        guard histogram.lowestDiscernibleValue == lowestDiscernibleValue,
            histogram.highestTrackableValue >= highestTrackableValue,
            histogram.numberOfSignificantValueDigits == significantDigits
        else { return false }
        for bucket in buckets { _ = histogram.record(bucket.value, count: bucket.count) }
        return true
    }

    /// A histogram holding these samples.
    public var histogram: Histogram<UInt64> {
        var histogram = Histogram<UInt64>(
            lowestDiscernibleValue: lowestDiscernibleValue, highestTrackableValue: highestTrackableValue,
            numberOfSignificantValueDigits: significantDigits)
        add(into: &histogram)
        return histogram
    }

    public static func == (lhs: DecodedHistogram, rhs: DecodedHistogram) -> Bool {
        lhs.lowestDiscernibleValue == rhs.lowestDiscernibleValue && lhs.highestTrackableValue == rhs.highestTrackableValue
            && lhs.significantDigits == rhs.significantDigits && lhs.buckets.elementsEqual(rhs.buckets, by: { $0 == $1 })
    }
}

/// HdrHistogram's V2 encoding, compressed and not, as the Java, C, Go and Python implementations
/// write it: a 40-byte big-endian header (cookie, payload length, normalizing index offset,
/// significant digits, lowest discernible value, highest trackable value, integer-to-double
/// ratio) and the counts array up to the maximum value's bucket as ZigZag LEB128 varints, where a
/// negative number `-n` stands for `n` empty buckets. The compressed form is a second cookie, the
/// length, and the zlib-DEFLATE of the whole plain encoding.
public enum HistogramV2Codec {
    /// Cookie of the plain V2 encoding (`V2EncodingCookieBase | 0x10`).
    public static let plainCookie: UInt32 = 0x1c84_9313
    /// Cookie of the compressed V2 encoding (`V2CompressedEncodingCookieBase | 0x10`).
    public static let compressedCookie: UInt32 = 0x1c84_9314
    /// The most bytes a compressed histogram may inflate to (a 3-digit histogram up to 2^62
    /// needs about 0.5 MiB at 9 bytes per bucket); anything larger is refused as hostile.
    public static let maximumPlainBytes = 4 << 20

    // MARK: - Encoding

    /// The plain V2 encoding of `histogram`.
    public static func encode(_ histogram: Histogram<UInt64>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        appendBigEndian(&bytes, plainCookie)
        appendBigEndian(&bytes, UInt32(0))  // payload length, patched below
        appendBigEndian(&bytes, UInt32(0))  // normalizing index offset: never shifted here
        appendBigEndian(&bytes, UInt32(histogram.numberOfSignificantValueDigits.rawValue))
        appendBigEndian(&bytes, histogram.lowestDiscernibleValue)
        appendBigEndian(&bytes, histogram.highestTrackableValue)
        appendBigEndian(&bytes, Double(1).bitPattern)
        let payloadStart = bytes.count

        var zeros: Int64 = 0
        var seen: UInt64 = 0
        let total = histogram.totalCount
        if total > 0 {
            // `allValues()` visits the counts array one index at a time, in order.
            for bucket in histogram.allValues() {
                let count = UInt64(bucket.count)
                if count == 0 {
                    zeros += 1
                    continue
                }
                if zeros > 0 {
                    appendZigZag(&bytes, zeros == 1 ? 0 : -zeros)
                    zeros = 0
                }
                appendZigZag(&bytes, Int64(bitPattern: count))
                seen += count
                if seen >= total { break }
            }
        }
        let length = UInt32(bytes.count - payloadStart)
        for index in 0..<4 { bytes[4 + index] = UInt8(truncatingIfNeeded: length >> (24 - 8 * index)) }
        return bytes
    }

    /// The compressed V2 encoding of `histogram`.
    public static func encodeCompressed(_ histogram: Histogram<UInt64>) -> [UInt8] {
        let plain = encode(histogram)
        var compressedLength = compressBound(uLong(plain.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        let status = compressed.withUnsafeMutableBufferPointer { target in
            plain.withUnsafeBufferPointer { source in
                compress2(target.baseAddress, &compressedLength, source.baseAddress, uLong(source.count), Z_DEFAULT_COMPRESSION)
            }
        }
        precondition(status == Z_OK, "zlib compress2 failed with \(status) on a buffer it sized itself")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + Int(compressedLength))
        appendBigEndian(&bytes, compressedCookie)
        appendBigEndian(&bytes, UInt32(compressedLength))
        bytes.append(contentsOf: compressed[0..<Int(compressedLength)])
        return bytes
    }

    /// The compressed encoding as base64 text, as `.hlog` lines and other tools carry it.
    public static func encodeBase64(_ histogram: Histogram<UInt64>) -> String {
        Data(encodeCompressed(histogram)).base64EncodedString()
    }

    // MARK: - Decoding

    /// Decodes either V2 form. Never traps on hostile bytes; allocation is bounded.
    public static func decode(_ bytes: [UInt8]) throws(HistogramCodecError) -> Histogram<UInt64> {
        try decodeBuckets(bytes).histogram
    }

    /// Decodes either V2 form to its parameters and buckets, validating everything.
    public static func decodeBuckets(_ bytes: [UInt8]) throws(HistogramCodecError) -> DecodedHistogram {
        guard bytes.count >= 8 else { throw HistogramCodecError(.truncated, "\(bytes.count) bytes, fewer than a header") }
        let cookie = readBigEndian32(bytes, 0)
        switch cookie {
        case compressedCookie:
            let length = Int(readBigEndian32(bytes, 4))
            guard length == bytes.count - 8 else {
                throw HistogramCodecError(.truncated, "compressed length says \(length) bytes, \(bytes.count - 8) follow")
            }
            return try decodePlain(inflate(Array(bytes[8...])))
        case plainCookie:
            return try decodePlain(bytes)
        default:
            throw HistogramCodecError(.unknownCookie, "cookie 0x\(String(cookie, radix: 16)) is not an HdrHistogram V2 encoding")
        }
    }

    /// Decodes base64 text of either V2 form.
    public static func decodeBase64(_ text: String) throws(HistogramCodecError) -> Histogram<UInt64> {
        try decodeBuckets(base64: text).histogram
    }

    /// Decodes base64 text of either V2 form to its parameters and buckets.
    public static func decodeBuckets(base64 text: String) throws(HistogramCodecError) -> DecodedHistogram {
        guard let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw HistogramCodecError(.badBase64, "not base64 text")
        }
        return try decodeBuckets([UInt8](data))
    }

    private static func decodePlain(_ bytes: [UInt8]) throws(HistogramCodecError) -> DecodedHistogram {
        guard bytes.count >= 40 else { throw HistogramCodecError(.truncated, "\(bytes.count) bytes, fewer than the 40-byte header") }
        guard readBigEndian32(bytes, 0) == plainCookie else {
            throw HistogramCodecError(.unknownCookie, "inner cookie 0x\(String(readBigEndian32(bytes, 0), radix: 16)) is not V2")
        }
        let payloadLength = Int(readBigEndian32(bytes, 4))
        let offset = Int32(bitPattern: readBigEndian32(bytes, 8))
        let digits = readBigEndian32(bytes, 12)
        let lowest = readBigEndian64(bytes, 16)
        let highest = readBigEndian64(bytes, 24)
        guard payloadLength == bytes.count - 40 else {
            throw HistogramCodecError(.truncated, "payload length says \(payloadLength) bytes, \(bytes.count - 40) follow")
        }
        guard offset == 0 else { throw HistogramCodecError(.invalidParameters, "normalizing index offset \(offset) is not supported") }
        guard let significant = SignificantDigits(rawValue: Int8(clamping: digits)), digits <= 5 else {
            throw HistogramCodecError(.invalidParameters, "\(digits) significant digits, not 0...5")
        }
        // Divided, not multiplied: a hostile lowest above 2^63 must not overflow.
        guard lowest >= 1, highest / 2 >= lowest, highest <= UInt64(1) << 62 else {
            throw HistogramCodecError(.invalidParameters, "lowest \(lowest) and highest \(highest) do not make a histogram")
        }
        let geometry = Geometry(lowest: lowest, digits: Int(digits))
        guard geometry.unitMagnitude + geometry.subBucketHalfCountMagnitude <= 61 else {
            throw HistogramCodecError(.invalidParameters, "lowest \(lowest) with \(digits) digits exceeds 64-bit values")
        }
        var buckets: [(value: UInt64, count: UInt64)] = []
        var total: UInt64 = 0
        var position = 40
        var index = 0
        while position < bytes.count {
            let value = try readZigZag(bytes, &position)
            if value < 0 {
                guard value > Int64.min, -value <= Int64(Int32.max) else {
                    throw HistogramCodecError(.badCounts, "zero run \(value) out of range")
                }
                index += Int(-value)
                continue
            }
            let bucketValue = geometry.value(atIndex: index)
            guard bucketValue <= highest else {
                throw HistogramCodecError(.badCounts, "a count at index \(index) lies above the highest trackable value")
            }
            if value > 0 {
                let (sum, overflow) = total.addingReportingOverflow(UInt64(value))
                guard !overflow else { throw HistogramCodecError(.badCounts, "counts overflow a 64-bit total") }
                total = sum
                buckets.append((bucketValue, UInt64(value)))
            }
            index += 1
        }
        return DecodedHistogram(
            lowestDiscernibleValue: lowest, highestTrackableValue: highest,
            significantDigits: significant, buckets: buckets)
    }

    /// The bucket arithmetic shared by every HdrHistogram implementation.
    struct Geometry {
        let unitMagnitude: Int
        let subBucketHalfCountMagnitude: Int

        init(lowest: UInt64, digits: Int) {
            unitMagnitude = 63 - lowest.leadingZeroBitCount
            var largestSingleUnit: UInt64 = 2
            for _ in 0..<digits { largestSingleUnit *= 10 }
            let subBucketCountMagnitude = Int(log2(Double(largestSingleUnit)).rounded(.up))
            subBucketHalfCountMagnitude = max(subBucketCountMagnitude, 1) - 1
        }

        /// The lowest value counted at `index` of the counts array.
        func value(atIndex index: Int) -> UInt64 {
            let halfCount = 1 << subBucketHalfCountMagnitude
            var bucket = (index >> subBucketHalfCountMagnitude) - 1
            var subBucket = (index & (halfCount - 1)) + halfCount
            if bucket < 0 {
                subBucket -= halfCount
                bucket = 0
            }
            let shift = bucket + unitMagnitude
            guard shift < 64, UInt64(subBucket).leadingZeroBitCount > shift else { return .max }
            return UInt64(subBucket) << shift
        }
    }

    // MARK: - Primitives

    private static func inflate(_ compressed: [UInt8]) throws(HistogramCodecError) -> [UInt8] {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw HistogramCodecError(.badCompression, "zlib could not start inflating")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: 64 << 10)
        var produced = 0
        var input = compressed
        let status: Int32 = input.withUnsafeMutableBufferPointer { source in
            stream.next_in = source.baseAddress
            stream.avail_in = uInt(source.count)
            while true {
                if produced == output.count {
                    guard output.count < maximumPlainBytes else { return Z_BUF_ERROR }
                    output.append(contentsOf: [UInt8](repeating: 0, count: min(output.count, maximumPlainBytes - output.count)))
                }
                let result: Int32 = output.withUnsafeMutableBufferPointer { target in
                    stream.next_out = target.baseAddress! + produced
                    stream.avail_out = uInt(target.count - produced)
                    let code = CZlib.inflate(&stream, Z_NO_FLUSH)
                    produced = target.count - Int(stream.avail_out)
                    return code
                }
                if result == Z_STREAM_END { return Z_OK }
                if result != Z_OK { return result }
                if stream.avail_in == 0 && stream.avail_out > 0 { return Z_DATA_ERROR }
            }
        }
        guard status == Z_OK else {
            throw HistogramCodecError(
                .badCompression,
                status == Z_BUF_ERROR
                    ? "inflates past \(maximumPlainBytes) bytes" : "DEFLATE data is corrupt (zlib status \(status))")
        }
        return Array(output[0..<produced])
    }

    private static func appendBigEndian<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        var big = value.bigEndian
        withUnsafeBytes(of: &big) { bytes.append(contentsOf: $0) }
    }

    private static func readBigEndian32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[at + $1]) }
    }

    private static func readBigEndian64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[at + $1]) }
    }

    /// ZigZag then LEB128, at most 9 bytes: the ninth byte carries 8 bits (HdrHistogram's variant).
    static func appendZigZag(_ bytes: inout [UInt8], _ value: Int64) {
        var unsigned = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        for _ in 0..<8 {
            if unsigned < 0x80 {
                bytes.append(UInt8(unsigned))
                return
            }
            bytes.append(UInt8(unsigned & 0x7F) | 0x80)
            unsigned >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: unsigned))
    }

    static func readZigZag(_ bytes: [UInt8], _ position: inout Int) throws(HistogramCodecError) -> Int64 {
        var unsigned: UInt64 = 0
        for byteIndex in 0..<9 {
            guard position < bytes.count else { throw HistogramCodecError(.badCounts, "a count is cut off") }
            let byte = bytes[position]
            position += 1
            if byteIndex == 8 {
                unsigned |= UInt64(byte) << 56
                break
            }
            unsigned |= UInt64(byte & 0x7F) << (7 * UInt64(byteIndex))
            if byte & 0x80 == 0 { break }
        }
        return Int64(bitPattern: unsigned >> 1) ^ -Int64(bitPattern: unsigned & 1)
    }
}
