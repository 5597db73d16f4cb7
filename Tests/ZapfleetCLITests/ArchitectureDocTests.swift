import Foundation
import Testing
import ZapfleetTestSupport

/// `docs/architecture.md` stays true: every hand-written source file is named under its target,
/// and every file it names exists.
@Suite("Architecture document")
struct ArchitectureDocTests {
    @Test("every source file is named under its target in docs/architecture.md, and every file named there exists")
    func documentMatchesTheTree() throws {
        let root = TestPaths.packageRoot
        let page = try String(contentsOf: root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        var named: Set<String> = []
        var target: String?
        for line in page.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("### `") { target = String(line.dropFirst(5).prefix { $0 != "`" }); continue }
            if line.hasPrefix("## ") { target = nil; continue }
            guard let target, line.hasPrefix("| `") else { continue }
            named.insert("Sources/\(target)/" + line.dropFirst(3).prefix { $0 != "`" })
        }
        var onDisk: Set<String> = []
        let sources = root.appendingPathComponent("Sources")
        let walker = FileManager.default.enumerator(atPath: sources.path)
        while let path = walker?.nextObject() as? String {
            if path.hasSuffix(".swift") && !path.contains("/Generated/") { onDisk.insert("Sources/" + path) }
        }
        #expect(onDisk.count > 50, "the tree was read: \(onDisk.count) files")
        #expect(onDisk.subtracting(named).isEmpty, "not in docs/architecture.md: \(onDisk.subtracting(named).sorted())")
        #expect(named.subtracting(onDisk).isEmpty, "named in docs/architecture.md but gone: \(named.subtracting(onDisk).sorted())")
    }
}
