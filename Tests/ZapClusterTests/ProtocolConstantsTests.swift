import Foundation
import Testing
import ZapProtocol
import ZapRun
import ZapfleetTestSupport

/// The numbers and names `Proto/zapfleet.proto` defines for every language: the Swift side reads
/// them from the generated code or agrees with them exactly.
@Suite("Protocol constants")
struct ProtocolConstantsTests {
    @Test("the protocol version is the .proto's PROTOCOL_VERSION_CURRENT, and the header comment says the same number")
    func version() throws {
        #expect(zapfleetProtocolVersion == UInt32(Zapfleet_V1_ProtocolVersion.current.rawValue))
        let proto = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Proto/zapfleet.proto"), encoding: .utf8)
        #expect(proto.contains("Envelope.protocol_version is \(zapfleetProtocolVersion) (this file's version)"))
    }

    @Test("enum Operation lists the measured operations in order, named as the report names them")
    func operations() throws {
        let proto = try String(contentsOf: TestPaths.packageRoot.appendingPathComponent("Proto/zapfleet.proto"), encoding: .utf8)
        let body = try #require(proto.range(of: "enum Operation {").map { proto[$0.upperBound...] }?.prefix { $0 != "}" })
        let names = body.split(separator: "\n").compactMap { line -> (String, Int)? in
            let parts = line.trimmingCharacters(in: .whitespaces).split(whereSeparator: { " =;".contains($0) })
            guard parts.count == 2, parts[0].hasPrefix("OPERATION_"), let number = Int(parts[1]), number > 0 else { return nil }
            return (parts[0].dropFirst("OPERATION_".count).lowercased(), number)
        }
        #expect(names.map(\.0) == MeasuredOperation.allCases.map(\.name))
        #expect(names.map(\.1) == MeasuredOperation.allCases.map { $0.rawValue + 1 })
        #expect(
            Zapfleet_V1_Operation.allCases.count == MeasuredOperation.allCases.count + 1,
            "the generated enum has every value and UNSPECIFIED")
    }
}
