//! Index maps: which channels of a space one unit stands for.
//!
//! A unit's channels are found in two steps. A *space* (the channels one layer creates) maps
//! each of its units to channels of the space by a [`UnitMap`]; a tensor's layout then places
//! the space's channels at an offset (a concatenation), or expands each one to H·W features
//! (a flatten). The identity map is a plain channel; the block map is a grouped convolution's
//! within-group index (unit *j* ↔ channel *j* of every group). Later kinds (an attention
//! head's rows) add a variant here; the analysis, [`crate::Resolution`] and surgery only
//! call [`UnitMap::unit`] and [`UnitMap::channels`].

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
}

impl UnitMap {
    /// The number of channels each unit stands for.
    pub fn channels_per_unit(&self) -> usize {
        match *self {
            UnitMap::Identity => 1,
            UnitMap::Blocks { blocks } => blocks,
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
        }
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
}
