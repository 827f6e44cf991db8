//! How a task is cut into pieces.

/// Smallest piece the automatic choice picks (1 MiB). Dragonfly's is 4 MiB;
/// smaller pieces spread through a swarm sooner: a 256 MiB blob to 50
/// agents took 0.44-0.52 of the floor with 4 MiB pieces and 0.75 with 1 MiB
/// (`docs/performance.md`), while a 1 GiB task still gets 4 MiB pieces.
pub const MIN_PIECE_LENGTH: u64 = 1 << 20;
/// Largest piece the automatic choice picks (64 MiB).
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;
/// The automatic choice aims at about this many pieces per task.
const TARGET_PIECES: u64 = 500;

/// Piece length for a task: the caller's fixed length, else
/// `next_power_of_two(len / 500)` clamped to 1..64 MiB (Dragonfly v2's
/// rule with a smaller minimum).
/// An unknown length gets the minimum.
pub fn piece_length_for(content_length: Option<u64>, fixed: Option<u64>) -> u64 {
    if let Some(f) = fixed {
        return f.max(1);
    }
    match content_length {
        Some(len) => (len / TARGET_PIECES)
            .max(1)
            .next_power_of_two()
            .clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH),
        None => MIN_PIECE_LENGTH,
    }
}

/// Number of pieces of a task of `content_length` bytes; 0 for an empty task.
pub fn piece_count(content_length: u64, piece_length: u64) -> u32 {
    // A u32 index covers 4 Gi pieces: 4 PiB at the 1 MiB minimum.
    u32::try_from(content_length.div_ceil(piece_length.max(1))).unwrap_or(u32::MAX)
}

/// Byte span of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceRange {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
}

impl PieceRange {
    /// Last byte, inclusive, as an HTTP Range wants it. Meaningless for length 0.
    pub fn last_byte(&self) -> u64 {
        self.offset + self.length.saturating_sub(1)
    }
}

/// The span of piece `number`, or `None` past the end.
pub fn piece_range(content_length: u64, piece_length: u64, number: u32) -> Option<PieceRange> {
    let offset = u64::from(number).checked_mul(piece_length)?;
    if offset >= content_length {
        return None;
    }
    Some(PieceRange {
        number,
        offset,
        length: piece_length.min(content_length - offset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIB: u64 = 1 << 20;

    #[test]
    fn automatic_piece_length() {
        assert_eq!(piece_length_for(Some(0), None), MIB);
        assert_eq!(piece_length_for(Some(1), None), MIB);
        assert_eq!(piece_length_for(Some(256 * MIB), None), MIB); // 0.51 MiB -> 1
        assert_eq!(piece_length_for(Some(600 * MIB), None), 2 * MIB); // 1.2 MiB -> 2
        assert_eq!(piece_length_for(Some(1 << 30), None), 4 * MIB); // 2.05 MiB -> 4
        assert_eq!(piece_length_for(Some(4 << 30), None), 16 * MIB); // 8.2 MiB -> 16
        assert_eq!(piece_length_for(Some(16 << 30), None), 64 * MIB); // 32.8 -> 64
        assert_eq!(piece_length_for(Some(1 << 40), None), 64 * MIB); // clamped
        assert_eq!(piece_length_for(Some(500 * 8 * MIB), None), 8 * MIB); // exact power
        assert_eq!(piece_length_for(None, None), MIB);
        assert_eq!(piece_length_for(Some(1 << 40), Some(MIB)), MIB);
    }

    #[test]
    fn counts_and_ranges_at_boundaries() {
        let p = 4 * MIB;
        assert_eq!(piece_count(0, p), 0);
        assert_eq!(piece_count(1, p), 1);
        assert_eq!(piece_count(p - 1, p), 1);
        assert_eq!(piece_count(p, p), 1);
        assert_eq!(piece_count(p + 1, p), 2);
        let last = piece_range(p + 1, p, 1).unwrap();
        assert_eq!((last.offset, last.length, last.last_byte()), (p, 1, p));
        assert_eq!(piece_range(p, p, 1), None);
        assert_eq!(piece_range(0, p, 0), None);
        assert_eq!(piece_range(p, p, 0).unwrap().last_byte(), p - 1);
    }
}
