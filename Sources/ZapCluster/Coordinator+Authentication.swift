import ZeroMQ
import Logging

extension Coordinator {
    // MARK: - Authentication

    /// The ZAP decision: a CURVE peer whose long-term key is on the allow-list is let in;
    /// anything else is refused, and never reaches ``handle(_:)``.
    func authenticate(_ request: ZAPRequest) -> String? {
        // Without keys, every ZMTP 3 peer is let in: the bind policy keeps such a coordinator on loopback.
        if configuration.security == nil && request.mechanism == "NULL" { return nil }
        if let key = request.clientKey, let name = configuration.security?.allowedWorkers[key] {
            logger.debug("authenticated \(name) from \(request.address)")
            return nil
        }
        keysRefused += 1
        // Logged in full at first, then sparsely: a flood of strangers must not flood the log.
        if keysRefused <= 10 || keysRefused % 100 == 0 {
            let key = request.clientKey.map { "public key \($0)" } ?? "no CURVE key (\(request.mechanism))"
            record(
                FleetEvent(
                    .workerRefused, .warning,
                    "refused a worker from \(request.address): \(key) is not on the allow-list (--allow-keys); refusals so far: \(keysRefused)",
                    [
                        "address": .string(request.address), "reason": .string("public key not on the allow-list"),
                        "count": .number(keysRefused)
                    ]))
        }
        return "public key not on the coordinator's allow-list"
    }
}
