import ArgumentParser
import Foundation
import ZapCluster

/// `zapfleet keygen`: writes a CURVE key pair for a coordinator or a worker.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).",
        discussion: """
            A coordinator that binds a network address needs a key pair and an allow-list of its workers' \
            public keys; each worker needs its own pair and the coordinator's public key. Keys travel only \
            as files, never on the command line, so that no secret shows in `ps`.

            Example (on the coordinator host, then on each worker host):
              zapfleet keygen coordinator --dir keys
              zapfleet keygen w1 --dir keys        # copy keys/w1.pub into the coordinator's allow-list directory
              zapfleet coordinator --bind tcp://0.0.0.0:5555 --key keys/coordinator.key --allow-keys workers/
              zapfleet worker --connect tcp://HOST:5555 --key keys/w1.key --coordinator-key coordinator.pub
            """
    )

    @Argument(help: "The key's name: the files are NAME.key and NAME.pub, and the coordinator logs workers by it.")
    var name: String

    @Option(help: "Directory to write the files to.")
    var dir: String = "."

    @Flag(help: "Replace existing files of that name.")
    var force = false

    func validate() throws {
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else {
            throw ValidationError("NAME '\(name)' must be a plain file name, e.g. w1")
        }
        guard KeyFiles.curveAvailable else {
            throw ValidationError("this libzmq has no CURVE support (built without libsodium); install Debian's libzmq5")
        }
    }

    func run() throws {
        do {
            let paths = try KeyFiles.generate(name: name, directory: dir, overwrite: force)
            print("secret key: \(paths.secret) (mode 0600; keep it on this host)")
            print("public key: \(paths.public)")
        } catch let error as FleetSecurityError {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
    }
}
