import Foundation
import Histogram
@testable import HistogramCodec
import Testing
import ZapPlatform
import ZapfleetTestSupport

/// HdrHistogram's V2 encoding: round trips, interoperability with another implementation, and
/// hostile input.
@Suite("HdrHistogram V2 codec")
struct HistogramV2CodecTests {
    @Test("encode then decode gives back the same histogram", arguments: [0, 1, 7, 1000, 100_000])
    func roundTrip(count: Int) throws {
        for seed in UInt64(1)...5 {
            let histogram = HistogramFixture.random(seed: seed, count: count)
            let plain = try HistogramV2Codec.decode(HistogramV2Codec.encode(histogram))
            let compressed = try HistogramV2Codec.decode(HistogramV2Codec.encodeCompressed(histogram))
            let text = try HistogramV2Codec.decodeBase64(HistogramV2Codec.encodeBase64(histogram))
            for decoded in [plain, compressed, text] {
                #expect(decoded.totalCount == histogram.totalCount)
                #expect(decoded == histogram, "seed \(seed), \(count) values")
            }
        }
    }

    @Test("the compressed form starts with the V2 compressed cookie (base64 'HISTF')")
    func cookie() {
        let text = HistogramV2Codec.encodeBase64(HistogramFixture.random(seed: 1, count: 10))
        #expect(text.hasPrefix("HISTF"))
    }

    @Test("a V2 histogram written by the Python implementation decodes to its buckets exactly")
    func pythonVector() throws {
        let url = try #require(Bundle.module.url(forResource: "python-hdrhistogram-v2", withExtension: "txt", subdirectory: "Vectors"))
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        let decoded = try HistogramV2Codec.decodeBase64(String(lines[0]))
        let summary = lines[1].split(separator: " ").compactMap { UInt64($0) }
        #expect(decoded.totalCount == summary[0])
        #expect(decoded.min == summary[1])
        #expect(decoded.max == summary[2])
        var buckets = 0
        for line in lines.dropFirst(2) {
            let fields = line.split(separator: " ").compactMap { UInt64($0) }
            #expect(decoded.countForValue(fields[0]) == fields[1], "bucket of \(fields[0])")
            buckets += 1
        }
        #expect(buckets > 3000)
        // And ours re-encodes it to something that decodes the same.
        #expect(try HistogramV2Codec.decode(HistogramV2Codec.encodeCompressed(decoded)) == decoded)
    }

    @Test("merging N decoded histograms equals one histogram fed every value")
    func mergeEqualsWhole() throws {
        var random = SplitMix64(seed: 77)
        var whole = HistogramFixture.empty()
        var parts = [Histogram<UInt64>](repeating: HistogramFixture.empty(), count: 5)
        for index in 0..<50_000 {
            let value = 1 + random.next() % 10_000_000_000
            _ = whole.record(value)
            _ = parts[index % 5].record(value)
        }
        var merged = HistogramFixture.empty()
        for part in parts { merged.add(try HistogramV2Codec.decode(HistogramV2Codec.encodeCompressed(part))) }
        #expect(merged == whole)
        #expect(merged.valueAtPercentile(99.9) == whole.valueAtPercentile(99.9))
    }

    @Test(
        "ZigZag LEB128 uses at most 9 bytes and round-trips the extremes",
        arguments: [Int64.min + 1, -1, 0, 1, 63, 64, 1 << 35, Int64.max])
    func zigZag(value: Int64) throws {
        var bytes: [UInt8] = []
        HistogramV2Codec.appendZigZag(&bytes, value)
        #expect(bytes.count <= 9)
        var position = 0
        #expect(try HistogramV2Codec.readZigZag(bytes, &position) == value)
        #expect(position == bytes.count)
    }

    @Test("hostile bytes give errors, never a crash")
    func hostileInput() throws {
        var fuzz = FuzzInput(seed: 5)
        let valid = HistogramV2Codec.encodeCompressed(HistogramFixture.random(seed: 3, count: 500))
        let plain = HistogramV2Codec.encode(HistogramFixture.random(seed: 3, count: 500))
        var rejected = 0
        for trial in 0..<3000 {
            var bytes: [UInt8]
            switch trial % 4 {
            case 0: bytes = fuzz.bytes(fuzz.below(200))
            case 1: bytes = Array(valid.prefix(fuzz.below(valid.count)))
            case 2:
                bytes = valid
                bytes[fuzz.below(bytes.count)] ^= UInt8(truncatingIfNeeded: fuzz.random.next() | 1)
            default:
                bytes = plain
                bytes[8 + fuzz.below(bytes.count - 8)] = UInt8(truncatingIfNeeded: fuzz.random.next())
            }
            do {
                _ = try HistogramV2Codec.decode(bytes)
            } catch {
                rejected += 1
            }
        }
        #expect(rejected > 1500)
        #expect(throws: HistogramCodecError.self) { try HistogramV2Codec.decodeBase64("not base64!") }
    }

    @Test(
        "fuzz: 100,000 random, spliced and mutated inputs (headers included) through both decoders give a histogram or an error, never a crash"
    )
    func fuzzDecoders() throws {
        var fuzz = FuzzInput(seed: 0x5eed)
        let seeds = [
            HistogramV2Codec.encodeCompressed(HistogramFixture.random(seed: 3, count: 500)),
            HistogramV2Codec.encode(HistogramFixture.random(seed: 4, count: 50)),
            HistogramV2Codec.encode(HistogramFixture.empty())
        ]
        var outcomes = (decoded: 0, rejected: 0)
        for _ in 0..<100_000 {
            var bytes = seeds[fuzz.below(seeds.count)]
            switch fuzz.below(6) {
            case 0 where bytes.count > 40:
                // The header: cookie, lengths, ranges, precision, conversion ratio.
                bytes[fuzz.below(40)] = UInt8(truncatingIfNeeded: fuzz.random.next())
            case 1: bytes = fuzz.bytes(fuzz.below(256))
            default: bytes = fuzz.mutated(bytes, others: seeds) { UInt8(truncatingIfNeeded: $0.next()) }
            }
            let buckets = try? HistogramV2Codec.decodeBuckets(bytes)
            let histogram = try? HistogramV2Codec.decode(bytes)
            // The two decoders agree on what is valid.
            #expect((buckets == nil) == (histogram == nil))
            if let buckets, let histogram { #expect(buckets.totalCount == histogram.totalCount) }
            if buckets == nil { outcomes.rejected += 1 } else { outcomes.decoded += 1 }
        }
        #expect(outcomes.rejected > 50_000)
        print("decoder fuzz: \(outcomes.decoded) decoded, \(outcomes.rejected) rejected")
    }

    @Test("a compressed payload that inflates past the limit is refused")
    func decompressionBomb() throws {
        // A plain header claiming a huge payload of zeros, which compresses to almost nothing.
        var plain = Array(HistogramV2Codec.encode(HistogramFixture.empty()).prefix(40))
        let payload = [UInt8](repeating: 0, count: HistogramV2Codec.maximumPlainBytes + 1)
        let length = UInt32(payload.count)
        for index in 0..<4 { plain[4 + index] = UInt8(truncatingIfNeeded: length >> (24 - 8 * index)) }
        plain += payload
        var compressed = [UInt8](repeating: 0, count: plain.count)
        var compressedLength = UInt(compressed.count)
        _ = compressed.withUnsafeMutableBufferPointer { target in
            plain.withUnsafeBufferPointer { source in
                compress2Shim(target.baseAddress!, &compressedLength, source.baseAddress!, UInt(source.count))
            }
        }
        var bytes: [UInt8] = [0x1c, 0x84, 0x93, 0x14]
        for index in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: UInt32(compressedLength) >> (24 - 8 * index))) }
        bytes += compressed.prefix(Int(compressedLength))
        #expect(throws: HistogramCodecError.self) { try HistogramV2Codec.decode(bytes) }
    }
}

import CZlib

private func compress2Shim(
    _ target: UnsafeMutablePointer<UInt8>, _ length: inout UInt, _ source: UnsafePointer<UInt8>, _ count: UInt
) -> Int32 {
    var targetLength = uLong(length)
    let status = compress2(target, &targetLength, source, uLong(count), 9)
    length = UInt(targetLength)
    return status
}
