//! Byte-level mutations of an input: bit flips, interesting bytes and integers, inserted,
//! deleted, duplicated and repeated ranges, dictionary tokens, and splices with another
//! input. A few mutations are stacked on each input.

/// Integers that sit on the edges of lengths, counts and offsets.
const INTERESTING: [i64; 14] =
    [0, 1, -1, 2, 7, 8, 127, 128, 255, 256, 65535, i32::MAX as i64, i32::MIN as i64, i64::MAX];

/// Bytes that change the meaning of text inputs.
const INTERESTING_BYTES: &[u8] = b"\0\x01\x7f\x80\xff\"'(){}[]=\n\\#,.-+*/ ";

/// A mutated copy of `input`, at most `max_len` bytes. `other` is a splice partner;
/// `dictionary` holds tokens worth inserting; with `tail_bias`, half of the positions fall
/// in the last 512 bytes (where a Parquet file keeps its footer).
pub fn mutate(
    rng: &mut fastrand::Rng,
    input: &[u8],
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
    tail_bias: bool,
) -> Vec<u8> {
    let mut data = input.to_vec();
    let rounds = 1usize << rng.usize(..4);
    for _ in 0..rounds {
        let len = data.len();
        let at = position(rng, len, tail_bias);
        match rng.u8(..11) {
            0 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.u8(..8),
            1 if len > 0 => data[at.min(len - 1)] = INTERESTING_BYTES[rng.usize(..INTERESTING_BYTES.len())],
            2 => {
                let count = rng.usize(1..9);
                let bytes: Vec<u8> = (0..count).map(|_| rng.u8(..)).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let end = (at + rng.usize(1..17)).min(len);
                data.drain(at.min(len - 1)..end);
            }
            4 if len > 0 => {
                let from = rng.usize(..len);
                let end = (from + rng.usize(1..33)).min(len);
                let piece = data[from..end].to_vec();
                data.splice(at..at, piece);
            }
            5 if !dictionary.is_empty() => {
                let token = dictionary[rng.usize(..dictionary.len())];
                data.splice(at..at, token.iter().copied());
            }
            6 if !dictionary.is_empty() && len > 0 => {
                let token = dictionary[rng.usize(..dictionary.len())];
                let end = (at + token.len()).min(len);
                data.splice(at.min(len)..end, token.iter().copied());
            }
            7 if !other.is_empty() => {
                let cut = rng.usize(..=len);
                let from = rng.usize(..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => {
                let value = INTERESTING[rng.usize(..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.usize(..4)];
                let bytes = if rng.bool() { value.to_le_bytes() } else { value.to_be_bytes() };
                let bytes = if rng.bool() { &bytes[..width] } else { &bytes[8 - width..] };
                let start = at.min(len - 1);
                let end = (start + width).min(len);
                data[start..end].copy_from_slice(&bytes[..end - start]);
            }
            9 if len > 0 => {
                let from = rng.usize(..len);
                let end = (from + rng.usize(1..9)).min(len);
                let piece = data[from..end].to_vec();
                let times = rng.usize(2..65);
                data.splice(at..at, piece.iter().copied().cycle().take(piece.len() * times));
            }
            _ => {
                let end = (at + rng.usize(1..65)).min(len);
                data.drain(at..end);
            }
        }
        data.truncate(max_len);
    }
    data
}

/// A position in `0..=len`.
fn position(rng: &mut fastrand::Rng, len: usize, tail_bias: bool) -> usize {
    if tail_bias && len > 0 && rng.bool() { len - rng.usize(..len.min(512)) - 1 } else { rng.usize(..=len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_bounds() {
        let mut rng = fastrand::Rng::with_seed(1);
        let dictionary: [&[u8]; 2] = [b"and", b"(("];
        for _ in 0..20_000 {
            let len = rng.usize(..40);
            let input: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let tail = rng.bool();
            let out = mutate(&mut rng, &input, b"other", &dictionary, 64, tail);
            assert!(out.len() <= 64);
        }
    }
}
