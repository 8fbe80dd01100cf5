//! Index maps: which channels of a space one unit stands for.
//!
//! A unit's channels are found in two steps. A *space* (the channels one layer creates) maps
//! each of its units to channels of the space by a [`UnitMap`]; a tensor's layout then places
//! the space's channels at an offset (a concatenation), or expands each one to H·W features
//! (a flatten). The identity map is a plain channel; the block map is a grouped convolution's
//! within-group index (unit *j* ↔ channel *j* of every group); the chunk map is an attention
//! head (unit *h* ↔ channels *h·d … (h+1)·d* of q, k and v, and the output projection's input
//! columns that read them). The analysis, [`crate::Resolution`] and surgery only call
//! [`UnitMap::unit`] and [`UnitMap::channels`].

/// How the units of a space map to its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitMap {
    /// Unit *u* is channel *u*.
    #[default]
    Identity,
    /// The channels are `blocks` equal blocks of `b` channels (a grouped convolution's
    /// groups), and unit *j* (0 ≤ *j* < *b*) is channel *j* of every block: channels
    /// `{g·b + j : g < blocks}`. Removing a unit removes the same within-group channel from
    /// every group, so the group count is kept.
    Blocks {
        /// The number of blocks.
        blocks: usize,
    },
    /// The channels are consecutive chunks of `size` channels (an attention's heads of
    /// `size = head_dim` channels), and unit *h* is chunk *h*: channels
    /// `h·size … (h+1)·size`. Removing a unit removes a whole head; the head size is kept.
    Chunks {
        /// Channels per chunk (the head dimension).
        size: usize,
    },
}

impl UnitMap {
    /// The number of channels each unit stands for.
    pub fn channels_per_unit(&self) -> usize {
        match *self {
            UnitMap::Identity => 1,
            UnitMap::Blocks { blocks } => blocks,
            UnitMap::Chunks { size } => size,
        }
    }

    /// What one unit is called in reports: `channel`, `within-group channel` (a grouped
    /// convolution's unit, one channel in every group) or `head` (an attention head).
    pub fn unit_name(&self) -> &'static str {
        match *self {
            UnitMap::Identity => "channel",
            UnitMap::Blocks { .. } => "within-group channel",
            UnitMap::Chunks { .. } => "head",
        }
    }

    /// The number of units of a space of `channels` channels.
    pub fn units(&self, channels: usize) -> usize {
        channels / self.channels_per_unit()
    }

    /// The unit that channel `channel` of a space of `channels` channels belongs to.
    pub fn unit(&self, channel: usize, channels: usize) -> usize {
        match *self {
            UnitMap::Identity => channel,
            UnitMap::Blocks { .. } => channel % self.units(channels),
            UnitMap::Chunks { size } => channel / size,
        }
    }

    /// The channels of unit `unit` in a space of `channels` channels, ascending.
    pub fn channels(&self, unit: usize, channels: usize) -> Vec<usize> {
        match *self {
            UnitMap::Identity => vec![unit],
            UnitMap::Blocks { blocks } => {
                let b = self.units(channels);
                (0..blocks).map(|g| g * b + unit).collect()
            }
            UnitMap::Chunks { size } => (unit * size..(unit + 1) * size).collect(),
        }
    }

    /// Unit scores from per-channel scores of one space (`channel_scores[c]` for channel
    /// *c*): the mean over each unit's channels, so a block-mapped unit *j* scores
    /// the mean of channel *j*'s scores over the blocks (Torch-Pruning's
    /// `imp.view(G, -1).mean(0)`), a chunk-mapped unit (a head) the mean over its chunk; the
    /// identity map returns the scores unchanged.
    pub fn unit_scores(&self, channel_scores: &[f64]) -> Vec<f64> {
        let channels = channel_scores.len();
        let per = self.channels_per_unit() as f64;
        (0..self.units(channels))
            .map(|u| {
                self.channels(u, channels)
                    .into_iter()
                    .map(|c| channel_scores[c])
                    .sum::<f64>()
                    / per
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_maps_take_one_channel_of_every_block() {
        let m = UnitMap::Blocks { blocks: 4 };
        assert_eq!(m.units(12), 3);
        assert_eq!(m.channels(1, 12), vec![1, 4, 7, 10]);
        for c in [1, 4, 7, 10] {
            assert_eq!(m.unit(c, 12), 1);
        }
        assert_eq!(m.unit(11, 12), 2);
        let id = UnitMap::Identity;
        assert_eq!(
            (id.units(12), id.unit(5, 12), id.channels(5, 12)),
            (12, 5, vec![5])
        );
    }

    #[test]
    fn chunk_maps_take_consecutive_channels() {
        let m = UnitMap::Chunks { size: 4 };
        assert_eq!((m.channels_per_unit(), m.units(12)), (4, 3));
        assert_eq!(m.unit_name(), "head");
        assert_eq!(m.channels(1, 12), vec![4, 5, 6, 7]);
        assert_eq!(m.channels(2, 12), vec![8, 9, 10, 11]);
        for c in 4..8 {
            assert_eq!(m.unit(c, 12), 1);
        }
        assert_eq!((m.unit(0, 12), m.unit(3, 12), m.unit(11, 12)), (0, 0, 2));
        // Every channel belongs to exactly the unit whose channels list it.
        for u in 0..3 {
            for c in m.channels(u, 12) {
                assert_eq!(m.unit(c, 12), u);
            }
        }
        // Unit scores: the mean over each chunk.
        let scores = [1.0, 3.0, 5.0, 7.0, 0.0, 0.0, 2.0, 2.0];
        assert_eq!(
            UnitMap::Chunks { size: 4 }.unit_scores(&scores),
            vec![4.0, 1.0]
        );
    }

    #[test]
    fn block_unit_scores_are_the_mean_over_the_blocks() {
        // 3 blocks of 2 channels: unit 0 = channels {0, 2, 4}, unit 1 = {1, 3, 5}.
        let scores = [1.0, 10.0, 2.0, 20.0, 6.0, 60.0];
        let m = UnitMap::Blocks { blocks: 3 };
        assert_eq!(m.unit_scores(&scores), vec![3.0, 30.0]);
        assert_eq!(UnitMap::Identity.unit_scores(&scores), scores.to_vec());
    }
}
