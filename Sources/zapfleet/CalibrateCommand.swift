import ArgumentParser
import Foundation
import ZapRun
import ZapScenario

/// `zapfleet calibrate`: this host's cost of zapping one SPTE, from its real KVM.
struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Measure this host's cost of zapping one SPTE on its real KVM, for the projection.",
        discussion: """
            Runs zapfleet-kvm-probe (make -C clients/c; /dev/kvm, root here) with the scenario's memslots and \
            vCPUs scaled to --kvm: the deletes that zap every SPTE (the zap-all quirk) and the closes give the \
            host's nanoseconds per SPTE (total time over the SPTEs KVM's own pages_4k lost), with the spread of \
            the events. --out writes it as JSON, which --kernel-spte-ns of run, coordinator and sweep takes.

            The figure is the host's MMU's: on a shadow-MMU host (kvm.tdp_mmu=N) not the TDP MMU's that the \
            simulation models; the file names the MMU, and so does every report that uses it.

            Exit codes: 0 measured; 64 bad input, no usable KVM or not enough free memory; 70 the probe failed.

            Example:
              zapfleet calibrate --kvm 1GiB --out calibration.json
              zapfleet run seed-64t --kernel-spte-ns calibration.json
            """
    )

    @Option(help: "Guest memory for the probe, e.g. 1GiB (real host memory: it must be available).")
    var kvm: String = "1GiB"

    @Option(help: "Built-in scenario name or YAML file whose memslots and vCPUs the probe scales (default: max-guest-memory).")
    var scenario: String = "max-guest-memory"

    @Option(help: "Write the calibration here as JSON.")
    var out: String?

    func validate() throws {
        _ = try OptionChecks.size(kvm, option: "--kvm", within: (16 << 20)...(64 << 30), example: "1GiB")
    }

    func run() throws {
        if let out { try OutputError.checkOutputs(out: nil, junit: out) }
        let resolved: Scenario
        do {
            resolved = try ScenarioCatalog.load(scenario)
        } catch {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
        let result: KernelProbeResult
        do {
            result = try KernelProbeRunner.run(scenario: resolved, bytes: Quantities.parseSize(kvm)!).result
        } catch {
            printError(error.description)
            throw error.badInput ? ZapfleetExitCode.badInput : ZapfleetExitCode.internalError
        }
        guard let calibration = result.calibration else {
            printError(
                "the probe zapped no SPTE it could time (no delete with the zap-all quirk, no close with SPTEs left); nothing to calibrate")
            throw ZapfleetExitCode.internalError
        }
        print("\(result.host): kernel \(result.kernel), \(result.mmuDescription): \(calibration.description)")
        if !result.isTDPMMU { print("note: this host's MMU is not the TDP MMU that zapfleet simulates; the figure is its shadow MMU's") }
        if let out {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            do {
                try encoder.encode(calibration).write(to: URL(fileURLWithPath: out), options: .atomic)
            } catch {
                printError("cannot write \(out): \(OptionChecks.reason(error))")
                throw ZapfleetExitCode.internalError
            }
            print("wrote \(out)")
        }
    }
}
