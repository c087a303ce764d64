//! What a fuzz target is: bytes in, an [`Outcome`] out, and what the mutator needs of it.

/// What Weir made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed (and run, where the target runs it) without an error.
    Accepted,
    /// Refused with an error: the expected answer to most mutated inputs.
    Refused,
}

/// One fuzz target.
pub trait Target {
    /// Runs one input. Panics (and aborts, and hangs) are the failures looked for.
    fn run(&mut self, input: &[u8]) -> Outcome;
    /// A well-formed input from the grammar (for targets that have one).
    fn generate(&self, _rng: &mut fastrand::Rng) -> Vec<u8> {
        Vec::new()
    }
    /// How many inputs in a hundred come from [`Target::generate`] rather than mutation.
    fn generated_percent(&self) -> u8 {
        0
    }
    /// Tokens the mutator inserts.
    fn dictionary(&self) -> &[&[u8]];
    /// The longest input the mutator makes.
    fn max_len(&self) -> usize;
    /// Whether mutations favour the end of the input.
    fn tail_bias(&self) -> bool {
        false
    }
}
