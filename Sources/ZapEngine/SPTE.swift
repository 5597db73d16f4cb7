/// One 64-bit secondary page-table entry, as the TDP MMU stores it.
///
/// Bit layout (modelled on x86 page-table entries):
/// bit 0 present, bit 1 writable, bit 5 accessed, bit 6 dirty, bit 7 large (a leaf at level 2
/// or 3), bits 12...51 frame number. For a non-leaf entry the frame number is the index of the
/// child table in the engine's ``PageTablePool``.
public struct SPTE: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The entry's 64 bits.
    public var rawValue: UInt64

    /// Wraps raw bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Entry is present (maps something).
    public static let presentBit: UInt64 = 1 << 0
    /// Guest may write through the mapping.
    public static let writableBit: UInt64 = 1 << 1
    /// Hardware saw an access through the mapping.
    public static let accessedBit: UInt64 = 1 << 5
    /// Hardware saw a write through the mapping.
    public static let dirtyBit: UInt64 = 1 << 6
    /// Entry at level 2 or 3 maps a 2 MiB or 1 GiB page instead of pointing to a table.
    public static let largeBit: UInt64 = 1 << 7
    /// Bits 12...51: frame number.
    public static let frameMask: UInt64 = 0x000F_FFFF_FFFF_F000

    /// An entry that maps nothing.
    public static let nonPresent = SPTE(rawValue: 0)

    /// `REMOVED_SPTE` (0x5a0): a non-present value that freezes an entry whose table is being
    /// torn down. No writer may overwrite it; a fault that meets it retries.
    public static let removed = SPTE(rawValue: 0x5a0)

    /// Is the entry present?
    @inlinable public var isPresent: Bool { rawValue & Self.presentBit != 0 }

    /// Is the entry frozen by a teardown in progress?
    @inlinable public var isRemoved: Bool { rawValue == Self.removed.rawValue }

    /// Does a present entry at `level` map memory (as opposed to pointing to a table)?
    @inlinable public func isLeaf(atLevel level: Int) -> Bool {
        isPresent && (level == 1 || rawValue & Self.largeBit != 0)
    }

    /// The frame number (a guest frame for a leaf, a pool page index for a table pointer).
    @inlinable public var frame: UInt64 { (rawValue & Self.frameMask) >> 12 }

    /// A present entry pointing to the child table at pool page `page`.
    @inlinable public static func table(_ page: PageIndex) -> SPTE {
        SPTE(rawValue: Self.presentBit | Self.writableBit | (UInt64(page.rawValue) << 12))
    }

    /// A present leaf mapping `frame` at `level` (the large bit is set above level 1).
    @inlinable public static func leaf(frame: UInt64, level: Int, writable: Bool, dirty: Bool) -> SPTE {
        var bits = Self.presentBit | Self.accessedBit | ((frame << 12) & Self.frameMask)
        if writable { bits |= Self.writableBit }
        if dirty { bits |= Self.dirtyBit }
        if level > 1 { bits |= Self.largeBit }
        return SPTE(rawValue: bits)
    }

    /// A readable form, e.g. `present|W|A|D|L frame=0x1234`.
    public var description: String {
        if isRemoved { return "REMOVED_SPTE" }
        guard isPresent else { return "non-present(0x\(String(rawValue, radix: 16)))" }
        var flags = ["present"]
        if rawValue & Self.writableBit != 0 { flags.append("W") }
        if rawValue & Self.accessedBit != 0 { flags.append("A") }
        if rawValue & Self.dirtyBit != 0 { flags.append("D") }
        if rawValue & Self.largeBit != 0 { flags.append("L") }
        return flags.joined(separator: "|") + " frame=0x" + String(frame, radix: 16)
    }
}

/// Geometry of the 4-level, 48-bit guest address space.
public enum PagingGeometry {
    /// Entries in one page table.
    public static let entriesPerTable = 512
    /// Bytes in one page table (one 4 KiB page).
    public static let tableBytes = 4096
    /// The root's level for 48-bit guest addresses.
    public static let rootLevel = 4
    /// Guest frames (4 KiB) spanned by one entry at `level`: 1, 512, 512², 512³.
    @inlinable public static func framesPerEntry(atLevel level: Int) -> UInt64 {
        1 << (9 * UInt64(level - 1))
    }
    /// The index into a level-`level` table of guest frame `gfn`.
    @inlinable public static func index(of gfn: UInt64, atLevel level: Int) -> Int {
        Int((gfn >> (9 * UInt64(level - 1))) & 511)
    }
    /// Guest frames addressable by one root (2^36 frames = 256 TiB).
    public static let framesPerRoot: UInt64 = 1 << 36
}

/// The size of a mapping a fault installs.
public enum PageSize: Int, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// 4 KiB, a level-1 leaf.
    case size4K = 1
    /// 2 MiB, a level-2 leaf.
    case size2M = 2
    /// 1 GiB, a level-3 leaf.
    case size1G = 3

    /// The page-table level of the leaf.
    @inlinable public var level: Int { rawValue }
    /// Guest frames (4 KiB) one such page spans.
    @inlinable public var frames: UInt64 { PagingGeometry.framesPerEntry(atLevel: level) }
    /// Bytes one such page spans.
    @inlinable public var bytes: UInt64 { frames * 4096 }

    /// `4K`, `2M` or `1G`.
    public var description: String {
        switch self {
        case .size4K: "4K"
        case .size2M: "2M"
        case .size1G: "1G"
        }
    }
}
