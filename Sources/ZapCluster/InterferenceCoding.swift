import ZapProtocol
import ZapRun

/// ``CPUInterference`` to and from its wire form, `CpuInterference`.
enum InterferenceCoding {
    static func encode(_ interference: CPUInterference) -> Zapfleet_V1_CpuInterference {
        var message = Zapfleet_V1_CpuInterference()
        message.vcpus = interference.vcpus.map { share in
            var wire = Zapfleet_V1_CpuInterference.VcpuShare()
            wire.vcpu = UInt32(share.vcpu)
            wire.cpuPlusOne = UInt32(share.cpu + 1)
            wire.guestNs = share.guestNs
            wire.lostNs = share.lostNs
            wire.units = share.units
            return wire
        }
        message.quietGuestNs = interference.quietGuestNs
        message.quietLostNs = interference.quietLostNs
        message.zapCpuNs = Dictionary(
            interference.zapCpuNs.compactMap { key, value in UInt32(key).map { ($0, value) } }, uniquingKeysWith: &+)
        message.memslotDeletions = UInt32(interference.memslotDeletions)
        message.deletionZapCpuNs = interference.deletionZapCpuNs
        message.deletionZapCpuNsMax = interference.deletionZapCpuNsMax
        message.deletionCpusMax = UInt32(interference.deletionCpusMax)
        message.deletionParallelZapsMax = UInt32(interference.deletionParallelZapsMax)
        return message
    }

    /// The figures a peer sent, checked: one share per vCPU below 4096, CPU numbers below 4096,
    /// lost time within guest time, every time at most a week.
    static func decode(_ message: Zapfleet_V1_CpuInterference) throws(ProtocolViolation) -> CPUInterference {
        let week: UInt64 = 7 * 24 * 3600 * 1_000_000_000
        var interference = CPUInterference()
        guard message.vcpus.count <= 4096, message.zapCpuNs.count <= 4096 else {
            throw ProtocolViolation("cpu_interference: \(message.vcpus.count) vcpus, \(message.zapCpuNs.count) CPUs")
        }
        for share in message.vcpus {
            guard share.vcpu < 4096, share.cpuPlusOne <= 4096 else {
                throw ProtocolViolation("cpu_interference.vcpus: vcpu \(share.vcpu) or cpu_plus_one \(share.cpuPlusOne) out of range")
            }
            guard share.guestNs <= week, share.lostNs <= share.guestNs, share.units <= 1 << 50 else {
                throw ProtocolViolation(
                    "cpu_interference.vcpus[vcpu \(share.vcpu)]: guest_ns \(share.guestNs), lost_ns \(share.lostNs), units \(share.units) out of range (lost at most guest, guest at most a week)"
                )
            }
            guard !interference.vcpus.contains(where: { $0.vcpu == Int(share.vcpu) }) else {
                throw ProtocolViolation("cpu_interference.vcpus: vcpu \(share.vcpu) twice")
            }
            interference.vcpus.append(
                .init(
                    vcpu: Int(share.vcpu), cpu: Int(share.cpuPlusOne) - 1, guestNs: share.guestNs,
                    lostNs: share.lostNs, units: share.units))
        }
        guard message.quietGuestNs <= week, message.quietLostNs <= message.quietGuestNs else {
            throw ProtocolViolation(
                "cpu_interference: quiet_lost_ns \(message.quietLostNs) is more than quiet_guest_ns \(message.quietGuestNs), or either is more than a week"
            )
        }
        for (cpu, nanoseconds) in message.zapCpuNs {
            guard cpu < 4096, nanoseconds <= week else {
                throw ProtocolViolation("cpu_interference.zap_cpu_ns[\(cpu)] \(nanoseconds) out of range")
            }
            interference.zapCpuNs[String(cpu)] = nanoseconds
        }
        guard message.memslotDeletions <= 1 << 30, message.deletionZapCpuNs <= week,
            message.deletionZapCpuNsMax <= message.deletionZapCpuNs, message.deletionCpusMax <= 4096,
            message.deletionParallelZapsMax <= 1 << 20
        else {
            throw ProtocolViolation(
                "cpu_interference: deletion figures out of range (deletion_zap_cpu_ns_max at most deletion_zap_cpu_ns, at most a week)")
        }
        interference.quietGuestNs = message.quietGuestNs
        interference.quietLostNs = message.quietLostNs
        interference.memslotDeletions = Int(message.memslotDeletions)
        interference.deletionZapCpuNs = message.deletionZapCpuNs
        interference.deletionZapCpuNsMax = message.deletionZapCpuNsMax
        interference.deletionCpusMax = Int(message.deletionCpusMax)
        interference.deletionParallelZapsMax = Int(message.deletionParallelZapsMax)
        return interference
    }
}
