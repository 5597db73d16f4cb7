import ArgumentParser

/// Checks a ZeroMQ endpoint before libzmq sees it: libzmq takes `tcp://host:99999` and listens
/// on another port (the number wraps), and reports other mistakes as a bare errno.
enum EndpointCheck {
    /// Throws a ``ValidationError`` naming `option` unless `endpoint` is `tcp://HOST:PORT` with a
    /// port of 1 to 65535 (`*` or 0 too when binding), `ipc://PATH` or `inproc://NAME`.
    static func validate(_ endpoint: String, option: String, binding: Bool = false) throws {
        let form = binding ? "tcp://HOST:PORT (PORT 1 to 65535, or * or 0 for any free port)" : "tcp://HOST:PORT (PORT 1 to 65535)"
        if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") {
            guard endpoint.split(separator: "/", omittingEmptySubsequences: true).count >= 2 else {
                throw ValidationError("\(option) '\(endpoint)' names no path; use \(form), ipc://PATH or inproc://NAME")
            }
            return
        }
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":"),
            colon > endpoint.index(endpoint.startIndex, offsetBy: 5)
        else {
            throw ValidationError("\(option) '\(endpoint)' is not an endpoint; use \(form)")
        }
        let host = endpoint[endpoint.index(endpoint.startIndex, offsetBy: 6)..<colon]
        let port = endpoint[endpoint.index(after: colon)...]
        guard !host.isEmpty, !host.contains(where: { $0.isWhitespace }) else {
            throw ValidationError("\(option) '\(endpoint)' has no host; use \(form)")
        }
        // Binding, `*` and 0 both ask for any free port.
        if binding && (port == "*" || port == "0") { return }
        guard let number = Int(port), (1...65_535).contains(number) else {
            throw ValidationError("\(option) '\(endpoint)': port '\(port)' is not 1 to 65535; use \(form)")
        }
    }
}
