import ArgumentParser
import Logging
import ZapCluster

/// The CURVE options of every command that binds a coordinator (`coordinator`, `sweep --bind`).
struct CoordinatorSecurityOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The coordinator's CURVE secret key file (from `zapfleet keygen`); turns on encryption and authentication.", valueName: "file"))
    var key: String?

    @Option(
        help: ArgumentHelp(
            "Workers allowed to join: a directory of their .pub files, or a file of public keys (one per line, optionally followed by a name).",
            valueName: "path"))
    var allowKeys: String?

    @Flag(help: "Bind a network address without keys: anyone who reaches the port can join. Only on a network you trust.")
    var insecure = false

    func validate() throws {
        guard (key == nil) == (allowKeys == nil) else {
            throw ValidationError(
                "--key and --allow-keys go together: the coordinator's secret key, and the workers' public keys it lets in")
        }
        if key != nil && insecure { throw ValidationError("--insecure and --key contradict each other; drop one") }
    }

    /// The CURVE setup for binding `bind`, after checking that the bind is allowed; a bad key or
    /// an open bind without keys is printed and exits 64.
    func resolve(bind: String, logger: Logger) throws -> CoordinatorSecurity? {
        do {
            guard let key, let allowKeys else {
                try BindPolicy.check(bind, secured: false, insecure: insecure)
                if insecure && !BindPolicy.isLocal(bind) {
                    logger.warning(
                        "--insecure: \(bind) takes workers without keys and in plain text; anyone who reaches it can join or send results")
                }
                return nil
            }
            return CoordinatorSecurity(keys: try KeyFiles.readKeyPair(key), allowedWorkers: try KeyFiles.readAllowList(allowKeys))
        } catch let error as FleetSecurityError {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
    }
}
