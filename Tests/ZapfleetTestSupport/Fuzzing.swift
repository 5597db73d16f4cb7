import ZapPlatform

/// Seeded random input for the fuzz tests: the same seed gives the same inputs on every run, so
/// that a failure can be replayed.
public struct FuzzInput {
    /// The generator; its seed fixes every input.
    public var random: SplitMix64

    /// Inputs fixed by `seed`.
    public init(seed: UInt64) { random = SplitMix64(seed: seed) }

    /// A whole number in `0..<bound` (0 when `bound` is 0).
    public mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(random.next() % UInt64(bound)) }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) } }

    /// `input` after one to `most` edits, each one of: an element removed, a token from `tokens`
    /// inserted, an element replaced by `element`'s, the rest cut off, random elements appended,
    /// or the rest replaced by the end of one of `others` (splicing two valid inputs).
    public mutating func mutated<Element>(
        _ input: [Element], tokens: [[Element]] = [], others: [[Element]] = [], most: Int = 4,
        element: (inout SplitMix64) -> Element
    ) -> [Element] {
        var output = input
        for _ in 0...below(most) {
            let position = below(output.count + 1)
            switch below(6) {
            case 0 where position < output.count: output.remove(at: position)
            case 1 where !tokens.isEmpty: output.insert(contentsOf: tokens[below(tokens.count)], at: position)
            case 2 where position < output.count: output[position] = element(&random)
            case 3: output.removeSubrange(position...)
            case 4: for _ in 0..<below(64) { output.append(element(&random)) }
            case 5 where !others.isEmpty:
                let other = others[below(others.count)]
                output = Array(output[..<position]) + other.suffix(below(other.count + 1))
            default: output.insert(element(&random), at: position)
            }
        }
        return output
    }
}
