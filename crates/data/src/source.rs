//! Where batches come from: the [`ImageSource`] trait (in-memory [`Dataset`] or streamed
//! [`ImageFolder`]), the [`Source`] a run configuration loads, and [`Prefetch`], which builds
//! the next batches on a background thread while the current one is used.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::Scope;

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use tch::Tensor;

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::folder::ImageFolder;
use crate::transform::Transform;

/// Images with labels that can produce model-input batches: the in-memory [`Dataset`] or the
/// streamed [`ImageFolder`]. Only labels and class names need to be in memory.
pub trait ImageSource: Sync {
    /// Name, e.g. `fashion-mnist/train` or the folder's path.
    fn name(&self) -> &str;

    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class id of every image.
    fn labels(&self) -> &[i64];

    /// Class names; labels index into this.
    fn classes(&self) -> &[String];

    /// The images at `indices` as `(inputs [B, C, H, W] float, labels [B] int64)` for a model
    /// whose input is `input = [C, H, W]`, transformed by `transform` (augmented only when
    /// `train`; `rng` drives the augmentation).
    fn batch(
        &self,
        transform: &Transform,
        indices: &[usize],
        input: [usize; 3],
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor), DataError>;
}

impl ImageSource for Dataset {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn labels(&self) -> &[i64] {
        &self.labels
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn batch(
        &self,
        transform: &Transform,
        indices: &[usize],
        input: [usize; 3],
        train: bool,
        mut rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor), DataError> {
        transform.batch(self, indices, input, train, &mut rng)
    }
}

/// The per-class permutation split behind [`Dataset::split_stratified`]: within each class
/// (ascending id), a permutation drawn from `seed`; the first `train(n)` go to the first
/// list. Both lists ascending.
pub(crate) fn stratified_indices(
    labels: &[i64],
    seed: u64,
    train: impl Fn(usize) -> usize,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut tr, mut te) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_class {
        idx.shuffle(&mut rng);
        let k = train(idx.len()).min(idx.len());
        tr.extend_from_slice(&idx[..k]);
        te.extend_from_slice(&idx[k..]);
    }
    tr.sort_unstable();
    te.sort_unstable();
    (tr, te)
}

/// A split as a run loads it: in memory (Fashion-MNIST, MNIST, IDX, CIFAR) or streamed from
/// an ImageFolder tree.
#[derive(Debug, Clone)]
pub enum Source {
    /// Decoded into memory.
    Memory(Dataset),
    /// An index of files, decoded batch by batch.
    Folder(ImageFolder),
}

impl Source {
    fn inner(&self) -> &dyn ImageSource {
        match self {
            Source::Memory(d) => d,
            Source::Folder(f) => f,
        }
    }

    /// A deterministic stratified split (the same draw for both kinds; see
    /// [`Dataset::split_stratified`]).
    pub fn split_stratified(&self, seed: u64, train: impl Fn(usize) -> usize) -> (Source, Source) {
        match self {
            Source::Memory(d) => {
                let (a, b) = d.split_stratified(seed, train);
                (Source::Memory(a), Source::Memory(b))
            }
            Source::Folder(f) => {
                let (a, b) = f.split_stratified(seed, train);
                (Source::Folder(a), Source::Folder(b))
            }
        }
    }

    /// The same split under another name.
    pub fn with_name(self, name: impl Into<String>) -> Source {
        match self {
            Source::Memory(d) => Source::Memory(Dataset {
                name: name.into(),
                ..d
            }),
            Source::Folder(f) => Source::Folder(f.with_name(name)),
        }
    }
}

impl From<Dataset> for Source {
    fn from(d: Dataset) -> Self {
        Source::Memory(d)
    }
}

impl From<ImageFolder> for Source {
    fn from(f: ImageFolder) -> Self {
        Source::Folder(f)
    }
}

impl ImageSource for Source {
    fn name(&self) -> &str {
        self.inner().name()
    }

    fn len(&self) -> usize {
        self.inner().len()
    }

    fn labels(&self) -> &[i64] {
        self.inner().labels()
    }

    fn classes(&self) -> &[String] {
        self.inner().classes()
    }

    fn batch(
        &self,
        transform: &Transform,
        indices: &[usize],
        input: [usize; 3],
        train: bool,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor), DataError> {
        self.inner().batch(transform, indices, input, train, rng)
    }
}

/// What a batch is made of: the source, the transform, the model input, training or not.
#[derive(Clone, Copy)]
pub struct Loader<'a> {
    /// Where the images come from.
    pub source: &'a dyn ImageSource,
    /// How they become inputs.
    pub transform: &'a Transform,
    /// The model input `[C, H, W]`.
    pub input: [usize; 3],
    /// Training batches (augmented) or evaluation batches.
    pub train: bool,
}

impl<'a> Loader<'a> {
    /// One batch, built on this thread.
    pub fn batch(
        &self,
        indices: &[usize],
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor), DataError> {
        self.source
            .batch(self.transform, indices, self.input, self.train, rng)
    }

    /// The batches of `order` (chunks of `batch_size`), built in order on a thread of
    /// `scope` that stays at most `depth` batches ahead. Memory does not grow with the
    /// dataset: at most `depth + 2` batches are alive (`depth` queued (at least 1), one being built or
    /// waiting for room in the queue, one in use — if the caller drops each batch before
    /// asking for the next), plus, for an [`ImageFolder`], the images being decoded into the
    /// batch under construction (four per decoding thread, and one more while it is copied
    /// into place). `rng` is used exactly as by calling [`Loader::batch`] on each chunk in
    /// turn, so the batches are the same. Dropping the iterator stops the thread after the
    /// batch it is building.
    ///
    /// ```
    /// # fn f(source: &dyn fair_data::ImageSource, t: &fair_data::Transform) -> Result<(), fair_data::DataError> {
    /// use rand::SeedableRng;
    /// let order: Vec<usize> = (0..source.len()).collect();
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    /// let loader = fair_data::Loader { source, transform: t, input: [3, 224, 224], train: false };
    /// std::thread::scope(|s| {
    ///     for batch in loader.prefetch(s, &order, 64, 2, &mut rng) {
    ///         let (x, y) = batch?;
    ///         assert_eq!(x.size()[1..], [3, 224, 224]);
    ///         assert_eq!(y.size(), [x.size()[0]]);
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// # // 10 random 3×224×224 images of two classes, held in memory.
    /// # let pixels = (0..10 * 3 * 224 * 224).map(|k| (k % 253) as u8).collect();
    /// # let labels = (0..10).map(|i| i % 2).collect();
    /// # let data = fair_data::Dataset::new("toy", [3, 224, 224], pixels, labels, vec!["a".into(), "b".into()]).unwrap();
    /// # f(&data, &fair_data::Transform { mean: vec![0.5; 3], std: vec![0.25; 3], ..Default::default() }).unwrap();
    /// ```
    pub fn prefetch<'scope, R: RngCore + Send>(
        self,
        scope: &'scope Scope<'scope, '_>,
        order: &'a [usize],
        batch_size: usize,
        depth: usize,
        rng: &'a mut R,
    ) -> Prefetch
    where
        'a: 'scope,
    {
        // The queue never needs more slots than there are batches (the channel allocates
        // them all up front, so a huge `depth` must not size it).
        let batches = order.len().div_ceil(batch_size.max(1)).max(1);
        let (tx, rx) = sync_channel(depth.clamp(1, batches));
        scope.spawn(move || {
            for chunk in order.chunks(batch_size.max(1)) {
                let b = self.batch(chunk, rng);
                let failed = b.is_err();
                if tx.send(b).is_err() || failed {
                    break;
                }
            }
        });
        Prefetch { rx }
    }
}

/// Batches built ahead on a background thread ([`Loader::prefetch`]); ends after the last
/// batch or the first error.
pub struct Prefetch {
    rx: Receiver<Result<(Tensor, Tensor), DataError>>,
}

impl Iterator for Prefetch {
    type Item = Result<(Tensor, Tensor), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}
