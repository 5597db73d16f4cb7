import Foundation

/// `--events` files as tests read them: one JSON object per line, every line a whole object.
public enum EventLines {
    /// Every event in the file at `path`, in order. Throws if a line is not a JSON object with an
    /// `event` name and a `time`: an events file is an interface, a malformed line is a failure.
    public static func read(_ path: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { index, line in
            if line.isEmpty { return nil }
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                object["event"] is String, object["time"] is String, object["t"] is NSNumber
            else {
                throw MalformedEventLine(path: path, line: index + 1, text: String(line))
            }
            return object
        }
    }

    /// Waits up to `seconds` for an event named `name` whose fields include `fields`; returns it.
    public static func waitFor(
        _ name: String, in path: String, where fields: [String: String] = [:], seconds: Double = 120
    ) -> [String: Any]? {
        Waiting.value(seconds: seconds) {
            (try? read(path))?.first { event in
                event["event"] as? String == name && fields.allSatisfy { "\(event[$0.key] ?? "")" == $0.value }
            }
        }
    }

    /// A line of an events file that is not an event.
    public struct MalformedEventLine: Error, CustomStringConvertible {
        public var path: String
        public var line: Int
        public var text: String
        public var description: String { "\(path):\(line): not an event line: \(text.prefix(300))" }
    }
}
