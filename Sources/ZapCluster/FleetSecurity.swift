import Foundation
import ZeroMQ

/// Bad keys, a key file anyone can read, or an open bind without keys.
public struct FleetSecurityError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public enum Code: String, Sendable {
        /// A key file that is missing or unreadable.
        case unreadableKeyFile
        /// A key file without a valid Z85 key.
        case malformedKey
        /// A secret key file that others may read.
        case exposedSecretKey
        /// Binding a non-loopback address without CURVE keys or `--insecure`.
        case openBindWithoutKeys
        /// `keygen` would overwrite a key.
        case keyExists
    }

    /// The kind of error.
    public let code: Code
    /// What happened, where, and what to do.
    public let message: String

    /// `message`.
    public var description: String { message }
}

/// The coordinator's side of CURVE: its own key pair and the workers it lets in.
public struct CoordinatorSecurity: Sendable {
    /// The coordinator's key pair; workers need its public half.
    public var keys: CurveKeyPair
    /// The public keys of the workers allowed to join, each with a name for logs.
    public var allowedWorkers: [CurveKey: String]

    /// CURVE with `keys`, letting in `allowedWorkers` only.
    public init(keys: CurveKeyPair, allowedWorkers: [CurveKey: String]) {
        self.keys = keys
        self.allowedWorkers = allowedWorkers
    }
}

/// A worker's side of CURVE: its key pair and the coordinator's public key.
public struct WorkerSecurity: Sendable {
    /// The worker's key pair; the coordinator's allow-list holds its public half.
    public var keys: CurveKeyPair
    /// The coordinator's public key: a server without the matching secret key cannot finish the handshake.
    public var coordinatorKey: CurveKey

    /// CURVE with `keys`, trusting only the coordinator whose public key is `coordinatorKey`.
    public init(keys: CurveKeyPair, coordinatorKey: CurveKey) {
        self.keys = keys
        self.coordinatorKey = coordinatorKey
    }
}

/// Key files: `NAME.key` holds a secret key (mode 0600), `NAME.pub` its public key, each as one
/// Z85 line after `#` comments. Keys are read from files, never from the command line, so that
/// no secret shows in `ps` or a shell history.
public enum KeyFiles {
    /// Writes a new key pair as `directory/name.key` (0600) and `directory/name.pub`; refuses
    /// to overwrite either unless `overwrite`. Returns the two paths.
    public static func generate(name: String, directory: String, overwrite: Bool = false) throws -> (secret: String, public: String) {
        let pair = try CurveKeyPair.generate()
        let secretPath = (directory as NSString).appendingPathComponent("\(name).key")
        let publicPath = (directory as NSString).appendingPathComponent("\(name).pub")
        if !overwrite {
            for path in [secretPath, publicPath] where FileManager.default.fileExists(atPath: path) {
                throw FleetSecurityError(
                    code: .keyExists,
                    message: "\(path) exists; give another name, or --force to replace it (workers holding the old key will be refused)")
            }
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writePrivately(
            secretPath,
            "# zapfleet CURVE secret key '\(name)'. Keep it private: mode 0600, never in a log or on a command line.\n\(pair.secretKey.z85)\n"
        )
        try
            "# zapfleet CURVE public key '\(name)'. Share it: workers need the coordinator's, the coordinator's --allow-keys lists the workers'.\n\(pair.publicKey.z85)\n"
            .write(toFile: publicPath, atomically: true, encoding: .utf8)
        return (secretPath, publicPath)
    }

    /// Reads a secret key file and derives its pair. Refuses a file that group or others may read.
    public static func readKeyPair(_ path: String) throws -> CurveKeyPair {
        // stat, not lstat: a Kubernetes secret volume reaches its files through symlinks, which are 0777 themselves.
        var status = stat()
        if stat(path, &status) == 0, case let mode = Int(status.st_mode), mode & 0o077 != 0 {
            throw FleetSecurityError(
                code: .exposedSecretKey,
                message: "\(path): a secret key that others may read (mode \(String(mode & 0o777, radix: 8))); run chmod 600 \(path)")
        }
        let key = try readKey(path, what: "secret key")
        return try CurveKeyPair(secretKey: key)
    }

    /// Reads a public key file. Refuses a secret key file.
    public static func readPublicKey(_ path: String) throws -> CurveKey { try readKey(path, what: "public key") }

    /// Reads an allow-list: a directory of `*.pub` files (each named by its file), or a file with
    /// one key per line, optionally followed by a name (`KEY name`), `#` comments allowed.
    public static func readAllowList(_ path: String) throws -> [CurveKey: String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FleetSecurityError(
                code: .unreadableKeyFile, message: "\(path): no such allow-list; give a directory of workers' .pub files or a file of keys")
        }
        var allowed: [CurveKey: String] = [:]
        if isDirectory.boolValue {
            let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pub") }.sorted()
            for file in files {
                allowed[try readPublicKey((path as NSString).appendingPathComponent(file))] = String(file.dropLast(4))
            }
        } else {
            for (number, line) in try contents(path, what: "allow-list").split(separator: "\n", omittingEmptySubsequences: false)
                .enumerated()
            {
                let fields = line.split(whereSeparator: \.isWhitespace)
                guard let first = fields.first, !first.hasPrefix("#") else { continue }
                guard let key = CurveKey(z85: String(first)) else {
                    throw FleetSecurityError(
                        code: .malformedKey,
                        message:
                            "\(path):\(number + 1): '\(first.prefix(12))…' is not a 40-character Z85 public key; copy the key line of a worker's .pub file"
                    )
                }
                allowed[key] = fields.count > 1 ? fields[1...].joined(separator: " ") : "key \(key.z85.prefix(8))"
            }
        }
        guard !allowed.isEmpty else {
            throw FleetSecurityError(code: .malformedKey, message: "\(path): the allow-list holds no key; no worker could join")
        }
        return allowed
    }

    private static func readKey(_ path: String, what: String) throws -> CurveKey {
        let text = try contents(path, what: what)
        // keygen names each file's half in its first line: taking one half for the other would
        // run CURVE with a key that can never match.
        let other = what == "secret key" ? "public key" : "secret key"
        if text.hasPrefix("# zapfleet CURVE \(other)") || (what == "secret key" && path.hasSuffix(".pub")) {
            let wanted = what == "secret key" ? "the secret key file (NAME.key, mode 0600)" : "the public key file (NAME.pub)"
            throw FleetSecurityError(
                code: .malformedKey, message: "\(path): this is a \(other) file, where a \(what) is needed; give \(wanted)")
        }
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let line = lines.first(where: { !$0.isEmpty && !$0.hasPrefix("#") }), let key = CurveKey(z85: line) else {
            throw FleetSecurityError(
                code: .malformedKey, message: "\(path): no \(what) in it (one 40-character Z85 line); make one with `zapfleet keygen`")
        }
        return key
    }

    private static func contents(_ path: String, what: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FleetSecurityError(
                code: .unreadableKeyFile, message: "\(path): cannot read this \(what) file; check the path and its permissions")
        }
        guard data.count <= 1 << 20, let text = String(data: data, encoding: .utf8), !text.contains("\0") else {
            throw FleetSecurityError(
                code: .malformedKey,
                message:
                    "\(path): not a \(what) file (\(data.count) bytes that are not a short text); give a file that `zapfleet keygen` wrote")
        }
        return text
    }

    private static func writePrivately(_ path: String, _ text: String) throws {
        // Created 0600 from the start: never readable by others, not even for a moment.
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else {
            throw FleetSecurityError(
                code: .unreadableKeyFile, message: "\(path): cannot create (\(String(cString: strerror(errno)))); check the directory")
        }
        defer { close(descriptor) }
        fchmod(descriptor, 0o600)
        let bytes = Array(text.utf8)
        guard write(descriptor, bytes, bytes.count) == bytes.count else {
            throw FleetSecurityError(code: .unreadableKeyFile, message: "\(path): write failed (\(String(cString: strerror(errno))))")
        }
    }
}

/// Which endpoints a coordinator may bind without keys.
public enum BindPolicy {
    /// Is `endpoint` reachable only from this machine (`inproc`, `ipc`, loopback TCP)?
    public static func isLocal(_ endpoint: String) -> Bool {
        if endpoint.hasPrefix("inproc://") || endpoint.hasPrefix("ipc://") { return true }
        guard endpoint.hasPrefix("tcp://") else { return false }
        var host = String(endpoint.dropFirst(6))
        if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Refuses to bind a network address without CURVE unless `insecure` says so on purpose.
    public static func check(_ endpoint: String, secured: Bool, insecure: Bool) throws {
        guard !secured, !insecure, !isLocal(endpoint) else { return }
        throw FleetSecurityError(
            code: .openBindWithoutKeys,
            message: """
                refusing to bind \(endpoint) without CURVE keys: anyone who can reach it could join the run or feed it results.
                Make keys with `zapfleet keygen coordinator` and `zapfleet keygen <worker>` on each worker host, then start the \
                coordinator with --key coordinator.key --allow-keys DIR_OF_WORKER_PUBS and the workers with \
                --key <worker>.key --coordinator-key coordinator.pub. On a network you trust, --insecure binds without keys.
                """)
    }
}
