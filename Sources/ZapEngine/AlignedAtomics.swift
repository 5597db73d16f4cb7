import Atomics

/// `count` atomics in one allocation that starts on a 128-byte boundary and fills whole 128-byte
/// blocks, `spacing` bytes apart: what one thread writes on every fault shares no cache line
/// with what another writes (two lines, past the adjacent-line prefetcher's pairing). Packed
/// (the default spacing) they are one thread's fields side by side; 128 apart, each its own.
///
/// Noncopyable: it owns its memory, freed when its owner goes. Stored in a class, it costs one
/// load of the base pointer per access, like the raw pointer it replaces.
struct AlignedAtomics<Value: AtomicValue>: ~Copyable where Value.AtomicRepresentation.Value == Value {
    static var blockBytes: Int { 128 }
    private typealias Storage = UnsafeAtomic<Value>.Storage

    private let base: UnsafeMutablePointer<UnsafeAtomic<Value>.Storage>
    private let spacing: Int
    private let capacity: Int

    /// `count` atomics set to `initial`, `spacingBytes` apart (a multiple of the atomic's size).
    init(count: Int, spacingBytes: Int = MemoryLayout<UnsafeAtomic<Value>.Storage>.stride, initial: Value) {
        let stride = MemoryLayout<Storage>.stride
        precondition(count > 0 && spacingBytes >= stride && spacingBytes % stride == 0, "atomics must not overlap")
        let bytes = (count * spacingBytes + Self.blockBytes - 1) / Self.blockBytes * Self.blockBytes
        spacing = spacingBytes / stride
        capacity = bytes / stride
        base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: Self.blockBytes)
            .initializeMemory(as: Storage.self, repeating: Storage(initial), count: capacity)
    }

    deinit {
        base.deinitialize(count: capacity)
        UnsafeMutableRawPointer(base).deallocate()
    }

    /// The atomic at `index` (unchecked: callers index with their own enums and stripes).
    @inline(__always)
    subscript(index: Int) -> UnsafeAtomic<Value> { UnsafeAtomic(at: base + index &* spacing) }
}
