//! A lazy ImageFolder: an index of file paths and labels, decoded batch by batch in parallel
//! with torchvision's standard transforms.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::BufReader;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{DataError, io, valid_range};
use crate::resample::{Rect, resize_window};
use crate::source::{ImageSource, stratified_indices};
use crate::transform::Transform;

/// Directory levels below a class directory that are searched for images.
const MAX_DEPTH: usize = 32;

/// Images decoded at once per decoding thread while a batch is built (the chunk that sits
/// next to the batch tensor; several per thread so uneven images balance out).
const IMAGES_PER_THREAD: usize = 4;

/// The default of [`FolderOptions::max_pixels`]: PIL's decompression-bomb limit. PIL refuses
/// (`DecompressionBombError`) an image of more than twice `Image.MAX_IMAGE_PIXELS`
/// (89,478,485), so torchvision never decodes one either; 178,956,970 pixels is a
/// 13,377 × 13,377 image, 537 MB as 8-bit RGB.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// Bytes per pixel of the widest layout the PNG and JPEG decoders produce (RGBA with 16 bits
/// per channel): the decoder's own allocation limit is raised to `max_pixels` times this.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Room for an image file's metadata (ICC profile, EXIF, text chunks) beyond its pixels: an
/// image file larger than `max_pixels` pixels of the widest layout (what an uncompressed PNG
/// holds) plus this is refused from its size, before it is read (the JPEG decoder reads the
/// whole file into memory).
const IMAGE_METADATA_BYTES: u64 = 64 << 20;

/// The most memory the PNG decoder may allocate for an image's metadata, whatever
/// `max_pixels` allows: the chunks read before the pixels (ICC profile, which is
/// zlib-compressed, EXIF, text chunks), read before the decoder has looked at the
/// dimensions. Real ICC profiles take kilobytes (a few MB at most); 16 MiB stops a small file
/// whose profile inflates to gigabytes. The pixels have their own bound, from the header's
/// dimensions checked against `max_pixels`.
pub const MAX_IMAGE_METADATA_BYTES: u64 = 16 << 20;

/// Skipped entries described one by one in [`ImageFolder::notes`]; beyond this many, one
/// more note counts the rest (a hostile tree must not flood the output).
const MAX_NOTES: usize = 20;

/// How an ImageFolder tree is indexed and its images decoded. The defaults follow
/// torchvision, with PIL's decompression-bomb limit.
///
/// ```
/// use fair_data::FolderOptions;
/// let strict = FolderOptions { follow_links: false, ..Default::default() };
/// assert_eq!(strict.max_pixels, fair_data::DEFAULT_MAX_PIXELS);
/// let parsed: FolderOptions = serde_json::from_str(r#"{"max_pixels": 1000000}"#)?;
/// assert!(parsed.follow_links);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderOptions {
    /// Follow symbolic links to directories (default true, as torchvision's `ImageFolder`,
    /// which walks with `followlinks=True`). Even then a link is not followed into a
    /// directory already searched (no loops, no image indexed twice), nor into the dataset
    /// itself (the root, a directory above it, or any class directory, its own included):
    /// its images would be labelled by a path outside their class directory. Links that
    /// leave the dataset (a shared image pool) are followed. When false, no link to a
    /// directory inside a class is followed (each is skipped, with a note), and a class
    /// directory that is a link is an error naming it: skipping it would give every later
    /// class the label of the one before (follow links, or replace the link by a directory).
    /// Links to image files are always followed, unless they lead into another class. Every
    /// skipped entry is reported in [`ImageFolder::notes`].
    pub follow_links: bool,
    /// The most pixels (width × height) an image may have, read from its header before it is
    /// decoded; a larger one is an error naming the file and its size. Default
    /// [`DEFAULT_MAX_PIXELS`] (PIL's decompression-bomb limit).
    pub max_pixels: u64,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            follow_links: true,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An ImageFolder tree as an index: one sub-directory of `root` per class (sorted by name),
/// the PNG and JPEG files under each (extensions `png`, `jpg`, `jpeg` in any case; searched
/// recursively and ordered like torchvision's `ImageFolder`: directories by path, files by
/// name). Only the paths and labels are held; images are decoded when a batch asks for them
/// ([`ImageSource::batch`]), in parallel on rayon's pool (or the pool of
/// [`ImageFolder::workers`]).
///
/// Indexing never opens an image, but it refuses an image name that is not a regular file
/// (a FIFO, a device or a socket called `x.png`), so nothing can block later; symbolic links
/// are followed as [`FolderOptions`] describes, and what was skipped is in
/// [`ImageFolder::notes`]. Decoding checks the image header against
/// [`FolderOptions::max_pixels`] first.
///
/// Batches apply torchvision's standard transforms. The resampling (PIL's bilinear filter)
/// and, for 1-channel models, the grey conversion (PIL's `convert("L")`) reproduce PIL's
/// bytes exactly, so PNG batches equal torchvision's; JPEG decoding (zune-jpeg here,
/// libjpeg-turbo in PIL) differs by up to 3 of 255 levels (about 0.02 on average):
///
/// - evaluation and calibration: `Resize(resize)` (shorter side; default
///   `round(min(H, W)·256/224)`, 256 for a 224×224 model) + `CenterCrop(H×W)`;
/// - training with `augment` set: `RandomResizedCrop(H×W, scale = (0.08, 1), ratio = (3/4,
///   4/3))` + `RandomHorizontalFlip()` when `augment.flip` (`crop_padding` is not used);
///   training without `augment` uses the evaluation transform;
/// - then `ToTensor()` (÷255) and `Normalize(mean, std)`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    name: String,
    classes: Vec<String>,
    /// Image paths, relative to `root`.
    files: Vec<Box<Path>>,
    labels: Vec<i64>,
    root: Arc<PathBuf>,
    pool: Option<Arc<rayon::ThreadPool>>,
    max_pixels: u64,
    notes: Arc<[String]>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The name of a class directory (lossy for names that are not UTF-8).
fn class_name(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// What identifies a directory however it is reached: device and inode.
#[cfg(unix)]
type DirId = (u64, u64);
/// What identifies a directory however it is reached: its canonical path.
#[cfg(not(unix))]
type DirId = PathBuf;

#[cfg(unix)]
fn dir_id(dir: &Path) -> Result<DirId, DataError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(io("read", dir))?;
    Ok((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(dir: &Path) -> Result<DirId, DataError> {
    dir.canonicalize().map_err(io("read", dir))
}

fn real_path(path: &Path) -> Result<PathBuf, DataError> {
    path.canonicalize().map_err(io("resolve", path))
}

/// Notes about skipped entries, the first [`MAX_NOTES`] in full, then a count.
#[derive(Default)]
struct Notes {
    list: Vec<String>,
    more: usize,
}

impl Notes {
    fn push(&mut self, note: String) {
        if self.list.len() < MAX_NOTES {
            tracing::debug!("{note}");
            self.list.push(note);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Arc<[String]> {
        if self.more > 0 {
            self.list.push(format!(
                "… and {} more entries skipped the same ways",
                self.more
            ));
        }
        self.list.into()
    }
}

/// Where the dataset really is: the real paths of the root and of every class directory,
/// which no link may lead into (an image reached that way would get its label from a path
/// outside its class directory).
struct Layout {
    /// Real path → class name (`None`: the root).
    protected: BTreeMap<PathBuf, Option<String>>,
}

impl Layout {
    /// How the real path `real` overlaps the dataset, if it does: in words, e.g. "inside
    /// class 'dog'", "the dataset root", "a directory above the dataset root".
    fn overlap(&self, real: &Path) -> Option<String> {
        let describe = |p: &Path, holds: bool| match (&self.protected[p], holds) {
            (None, false) if p == real => "the dataset root".to_owned(),
            (None, false) => "inside the dataset root".to_owned(),
            (None, true) => "a directory above the dataset root".to_owned(),
            (Some(c), false) if p == real => format!("the directory of class '{c}'"),
            (Some(c), false) => format!("inside class '{c}'"),
            (Some(c), true) => format!("a directory holding class '{c}'"),
        };
        // Inside a protected directory (the innermost one)...
        if let Some(p) = real.ancestors().find(|a| self.protected.contains_key(*a)) {
            return Some(describe(p, false));
        }
        // ... or holding one: protected paths under `real` sort right after it.
        self.protected
            .range::<Path, _>((Bound::Included(real), Bound::Unbounded))
            .next()
            .filter(|(p, _)| p.starts_with(real))
            .map(|(p, _)| describe(p, true))
    }
}

/// The class directories of `root` (sorted), with their real paths. A link to a directory is
/// a class directory when links are followed; when they are not, it is an error (skipping a
/// class would shift the labels of the classes after it). One that leads into the dataset,
/// and two class directories that are one another or nest, are errors: their images would
/// have two labels.
fn class_dirs(
    root: &Path,
    options: &FolderOptions,
) -> Result<(Vec<(PathBuf, PathBuf)>, PathBuf), DataError> {
    let root_real = real_path(root)?;
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(root).map_err(io("read", root))? {
        let e = e.map_err(io("read", root))?;
        let p = e.path();
        let t = e.file_type().map_err(io("read", &p))?;
        if t.is_dir() {
            let real = root_real.join(e.file_name());
            dirs.push((p, real));
        } else if t.is_symlink() && p.is_dir() {
            if !options.follow_links {
                return Err(DataError::Invalid(format!(
                    "ImageFolder '{}': the class directory '{}' is a symbolic link, and links \
                     are not followed (follow_links = false); it is not skipped, since that \
                     would drop the class and shift the labels of the classes after it. \
                     Follow links (follow_links = true, the default), or replace the link by \
                     a directory",
                    root.display(),
                    p.display()
                )));
            }
            let real = real_path(&p)?;
            if real.starts_with(&root_real) || root_real.starts_with(&real) {
                return Err(DataError::Invalid(format!(
                    "ImageFolder '{}': the class directory '{}' is a link to '{}', {}; its \
                     images would be labelled twice (remove the link)",
                    root.display(),
                    p.display(),
                    real.display(),
                    if real == root_real {
                        "the dataset root"
                    } else if real.starts_with(&root_real) {
                        "inside the dataset"
                    } else {
                        "a directory above the dataset root"
                    }
                )));
            }
            dirs.push((p, real));
        }
    }
    dirs.sort();
    let mut by_real: Vec<&(PathBuf, PathBuf)> = dirs.iter().collect();
    by_real.sort_by(|a, b| a.1.cmp(&b.1));
    // Nesting shows between neighbours: everything under a path sorts right after it.
    for pair in by_real.windows(2) {
        let ((a, ra), (b, rb)) = (pair[0], pair[1]);
        if rb.starts_with(ra) {
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}': the class directories '{}' and '{}' are {} ('{}'), so \
                 images would be labelled twice (remove the link)",
                root.display(),
                a.display(),
                b.display(),
                if ra == rb {
                    "the same directory"
                } else {
                    "nested"
                },
                rb.display()
            )));
        }
    }
    Ok((dirs, root_real))
}

/// The class directories `found` placed at their index in `classes`: the directory named
/// `classes[k]` at `k`, `None` for a class without one. A directory not in `classes`, and a
/// class named twice, are errors.
fn by_class(
    root: &Path,
    classes: &[String],
    found: Vec<(PathBuf, PathBuf)>,
) -> Result<Vec<Option<(PathBuf, PathBuf)>>, DataError> {
    let mut label: std::collections::HashMap<&str, usize> = Default::default();
    for (k, c) in classes.iter().enumerate() {
        if label.insert(c, k).is_some() {
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}': the class list names '{c}' twice",
                root.display()
            )));
        }
    }
    let mut dirs = vec![None; classes.len()];
    for (dir, real) in found {
        let name = class_name(&dir);
        let Some(&k) = label.get(name.as_str()) else {
            let shown: Vec<&str> = classes.iter().take(5).map(String::as_str).collect();
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}': the class directory '{}' is not one of the {} classes it is \
                 indexed against ({}{}; for a test split, the training split's), so its images \
                 would have no label",
                root.display(),
                dir.display(),
                classes.len(),
                shown.join(", "),
                if classes.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )));
        };
        dirs[k] = Some((dir, real));
    }
    Ok(dirs)
}

/// Walks the class directories one by one, refusing special files named as images and
/// skipping (with notes) links that lead into the dataset, directories already searched and
/// levels below [`MAX_DEPTH`].
struct Walker<'a> {
    layout: &'a Layout,
    /// Every class directory and the root: reaching one again is a loop.
    seeds: &'a [DirId],
    follow_links: bool,
    notes: &'a mut Notes,
}

impl Walker<'_> {
    /// The images of one class: `(directory, sorted file names)` per directory searched,
    /// directories in path order.
    fn class_images(
        &mut self,
        class: &str,
        class_dir: &Path,
    ) -> Result<Vec<(PathBuf, Vec<OsString>)>, DataError> {
        let class_real = real_path(class_dir)?;
        let mut visited: HashSet<DirId> = self.seeds.iter().cloned().collect();
        visited.insert(dir_id(class_dir)?);
        let mut stack = vec![(class_dir.to_owned(), 0usize)];
        let mut found = Vec::new();
        while let Some((dir, depth)) = stack.pop() {
            let (subdirs, names) = self.entries(class, &class_real, &dir)?;
            if depth >= MAX_DEPTH {
                if !subdirs.is_empty() {
                    self.notes.push(format!(
                        "did not search the {} sub-directories of '{}': more than {MAX_DEPTH} \
                         levels below its class directory",
                        subdirs.len(),
                        dir.display()
                    ));
                }
            } else {
                for d in subdirs {
                    if visited.insert(dir_id(&d)?) {
                        stack.push((d, depth + 1));
                    } else {
                        self.notes.push(format!(
                            "skipped '{}': that directory was searched already (a loop, or a \
                             second path to it)",
                            d.display()
                        ));
                    }
                }
            }
            found.push((dir, names));
        }
        // torchvision walks each class directory and sorts by the directory path.
        found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        Ok(found)
    }

    /// Sub-directories to search and image file names in `dir`, sorted.
    fn entries(
        &mut self,
        class: &str,
        class_real: &Path,
        dir: &Path,
    ) -> Result<(Vec<PathBuf>, Vec<OsString>), DataError> {
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        for e in std::fs::read_dir(dir).map_err(io("read", dir))? {
            let e = e.map_err(io("read", dir))?;
            let p = e.path();
            let t = e.file_type().map_err(io("read", &p))?;
            if t.is_dir() {
                dirs.push(p);
            } else if t.is_file() {
                if is_image(&p) {
                    files.push(e.file_name());
                }
            } else if t.is_symlink() {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        let follow = self.follow_link(class, class_real, &p, true)?;
                        dirs.extend(follow.then_some(p));
                    }
                    Ok(_) if is_image(&p) => {
                        fair_fs::check_regular(&p, "an image file")?;
                        if self.follow_link(class, class_real, &p, false)? {
                            files.push(e.file_name());
                        }
                    }
                    // A broken link named as an image fails now rather than in a batch.
                    Err(err) if is_image(&p) => return Err(io("read", &p)(err)),
                    _ => {}
                }
            } else if is_image(&p) {
                // A FIFO, device or socket named as an image: refused by name, unopened.
                fair_fs::check_regular(&p, "an image file")?;
            }
        }
        dirs.sort();
        files.sort();
        Ok((dirs, files))
    }

    /// Whether to follow the link `link` (to a directory when `is_dir`, else to an image) met
    /// in class `class`; a note says why not.
    fn follow_link(
        &mut self,
        class: &str,
        class_real: &Path,
        link: &Path,
        is_dir: bool,
    ) -> Result<bool, DataError> {
        if is_dir && !self.follow_links {
            self.notes.push(format!(
                "skipped the link '{}' to a directory: links are not followed \
                 (follow_links = false)",
                link.display()
            ));
            return Ok(false);
        }
        let real = real_path(link)?;
        if real.starts_with(class_real) {
            // An image linked within its own class keeps its label.
            if !is_dir {
                return Ok(true);
            }
            self.notes.push(format!(
                "skipped the link '{}' → '{}': it leads back into its own class directory (a \
                 loop, or a second path to the same images)",
                link.display(),
                real.display()
            ));
            return Ok(false);
        }
        match self.layout.overlap(&real) {
            None => Ok(true),
            Some(place) => {
                self.notes.push(format!(
                    "skipped the link '{}' → '{}': it leads to {place}, so its {} would be \
                     labelled '{class}' by a path outside their class directory",
                    link.display(),
                    real.display(),
                    if is_dir { "images" } else { "image" }
                ));
                Ok(false)
            }
        }
    }
}

impl ImageFolder {
    /// Indexes the tree at `root` (no image is opened): one class per sub-directory, sorted
    /// by name; default [`FolderOptions`].
    pub fn open(root: &Path) -> Result<ImageFolder, DataError> {
        ImageFolder::open_with(root, None, &FolderOptions::default())
    }

    /// Indexes the tree at `root` against the class list `classes` (typically the training
    /// split's [`ImageSource::classes`]), so that its labels mean the same classes: the
    /// sub-directory named `classes[k]` gets label `k`. A class without a sub-directory has
    /// no images; a sub-directory that is not in `classes` is an error naming it (its images
    /// would have no label). Default [`FolderOptions`].
    ///
    /// ```
    /// use fair_data::{ImageFolder, ImageSource};
    /// // A training split with classes `cat` and `dog`, a test split with only `dog`.
    /// let dir = tempfile::tempdir().unwrap();
    /// for f in ["train/cat/a.png", "train/dog/b.png", "test/dog/c.png"] {
    ///     let path = dir.path().join(f);
    ///     std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ///     image::GrayImage::new(4, 4).save(path).unwrap();
    /// }
    /// let train = ImageFolder::open(&dir.path().join("train"))?;
    /// let test = ImageFolder::open_with_classes(&dir.path().join("test"), train.classes())?;
    /// assert_eq!(test.classes(), train.classes());
    /// assert_eq!(test.labels(), [1]); // "dog" is class 1 in both splits
    /// # Ok::<(), fair_data::DataError>(())
    /// ```
    pub fn open_with_classes(root: &Path, classes: &[String]) -> Result<ImageFolder, DataError> {
        ImageFolder::open_with(root, Some(classes), &FolderOptions::default())
    }

    /// Indexes the tree at `root` with `options`: against `classes` as
    /// [`ImageFolder::open_with_classes`] does when given, else with one class per
    /// sub-directory as [`ImageFolder::open`] does. Entries skipped on the way are in
    /// [`ImageFolder::notes`]. A tree without a single image is an error naming it (a split
    /// with no images would make every accuracy on it undefined).
    ///
    /// ```
    /// use fair_data::{FolderOptions, ImageFolder, ImageSource};
    /// let dir = tempfile::tempdir().unwrap();
    /// for f in ["cat/a.png", "cat/b.png", "dog/c.png"] {
    ///     let path = dir.path().join(f);
    ///     std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ///     image::GrayImage::new(4, 4).save(path).unwrap();
    /// }
    /// let options = FolderOptions { follow_links: false, max_pixels: 50_000_000 };
    /// let train = ImageFolder::open_with(dir.path(), None, &options)?;
    /// assert_eq!((train.len(), train.classes()), (3, &["cat".to_string(), "dog".to_string()][..]));
    /// for note in train.notes() {
    ///     eprintln!("note: {note}");
    /// }
    /// # Ok::<(), fair_data::DataError>(())
    /// ```
    pub fn open_with(
        root: &Path,
        classes: Option<&[String]>,
        options: &FolderOptions,
    ) -> Result<ImageFolder, DataError> {
        let mut notes = Notes::default();
        let (found, root_real) = class_dirs(root, options)?;
        let (classes, dirs) = match classes {
            None => {
                if found.is_empty() {
                    return Err(DataError::Invalid(format!(
                        "ImageFolder '{}' has no class sub-directories (expected \
                         root/<class>/<image>.png)",
                        root.display()
                    )));
                }
                let classes = found.iter().map(|(d, _)| class_name(d)).collect();
                (classes, found.into_iter().map(Some).collect())
            }
            Some(classes) => (classes.to_vec(), by_class(root, classes, found)?),
        };
        let mut protected = BTreeMap::from([(root_real, None)]);
        let mut seeds = vec![dir_id(root)?];
        for (k, d) in dirs.iter().enumerate() {
            if let Some((dir, real)) = d {
                protected.insert(real.clone(), Some(classes[k].clone()));
                seeds.push(dir_id(dir)?);
            }
        }
        let layout = Layout { protected };
        let mut walker = Walker {
            layout: &layout,
            seeds: &seeds,
            follow_links: options.follow_links,
            notes: &mut notes,
        };
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (label, d) in dirs.iter().enumerate() {
            let Some((class_dir, _)) = d else {
                continue;
            };
            for (dir, names) in walker.class_images(&classes[label], class_dir)? {
                let rel = dir.strip_prefix(root).unwrap_or(&dir).to_owned();
                for n in names {
                    files.push(rel.join(n).into_boxed_path());
                    labels.push(label as i64);
                }
            }
        }
        if files.is_empty() {
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}' holds no PNG or JPEG images",
                root.display()
            )));
        }
        Ok(ImageFolder {
            name: root.display().to_string(),
            classes,
            files,
            labels,
            root: Arc::new(root.to_owned()),
            pool: None,
            max_pixels: options.max_pixels,
            notes: notes.finish(),
        })
    }

    /// Entries skipped while indexing, one sentence each (at most 20, then a count): links
    /// not followed (into the dataset itself, or any with `follow_links = false`),
    /// directories reached a second time, levels deeper than 32 below a class directory.
    /// Empty for a plain tree. Callers should show them: they explain why the image count
    /// is lower than the files on disk.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Refuses images whose header declares more than `n` pixels (see
    /// [`FolderOptions::max_pixels`]); changes nothing in the index.
    pub fn max_pixels(mut self, n: u64) -> ImageFolder {
        self.max_pixels = n;
        self
    }

    /// Decodes on a pool of `n` threads of its own instead of rayon's global pool.
    pub fn workers(mut self, n: usize) -> Result<ImageFolder, DataError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .thread_name(|i| format!("fair-data-decode-{i}"))
            .build()
            .map_err(|e| DataError::Invalid(format!("cannot start {n} decoding threads: {e}")))?;
        self.pool = Some(Arc::new(pool));
        Ok(self)
    }

    /// An error unless `i` is an image of this index.
    fn check_index(&self, i: usize) -> Result<(), DataError> {
        if i < self.files.len() {
            return Ok(());
        }
        Err(DataError::Invalid(format!(
            "image {i} is outside ImageFolder '{}': {}",
            self.name,
            valid_range(self.files.len(), "images")
        )))
    }

    /// The path of image `i`; an error naming `i` and the folder when there is no image `i`.
    pub fn path(&self, i: usize) -> Result<PathBuf, DataError> {
        self.check_index(i)?;
        Ok(self.root.join(&self.files[i]))
    }

    /// The images at `indices`, as a new index (nothing is read); an error naming the first
    /// index that is not an image of this folder.
    pub fn subset(
        &self,
        name: impl Into<String>,
        indices: &[usize],
    ) -> Result<ImageFolder, DataError> {
        for &i in indices {
            self.check_index(i)?;
        }
        Ok(self.subset_of_checked(name, indices))
    }

    /// [`ImageFolder::subset`] of indices known to be in range.
    fn subset_of_checked(&self, name: impl Into<String>, indices: &[usize]) -> ImageFolder {
        ImageFolder {
            name: name.into(),
            classes: self.classes.clone(),
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            root: Arc::clone(&self.root),
            pool: self.pool.clone(),
            max_pixels: self.max_pixels,
            notes: Arc::clone(&self.notes),
        }
    }

    /// The same index under another name.
    pub fn with_name(self, name: impl Into<String>) -> ImageFolder {
        ImageFolder {
            name: name.into(),
            ..self
        }
    }

    /// A deterministic stratified split, exactly as [`crate::Dataset::split_stratified`]
    /// draws it (the splits are named `<name>/train` and `<name>/test`).
    pub fn split_stratified(
        &self,
        seed: u64,
        train: impl Fn(usize) -> usize,
    ) -> (ImageFolder, ImageFolder) {
        let (tr, te) = stratified_indices(&self.labels, seed, train);
        (
            self.subset_of_checked(format!("{}/train", self.name), &tr),
            self.subset_of_checked(format!("{}/test", self.name), &te),
        )
    }

    /// Decodes image `i` as interleaved 8-bit pixels with `channels` (1 = grey, 3 = RGB):
    /// `(pixels, width, height)`; an error naming `i` and the folder when there is no image
    /// `i`. Colour images become grey as PIL's `convert("L")` makes them (as torchvision's
    /// `Grayscale` and `finetune.py` do for a 1-channel model):
    /// `(19595·R + 38470·G + 7471·B + 2¹⁵) >> 16`, alpha ignored; 8-bit grey images stay as
    /// they are.
    pub fn decode(&self, i: usize, channels: usize) -> Result<(Vec<u8>, usize, usize), DataError> {
        let img = decode_image(&self.path(i)?, self.max_pixels)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let px = if channels == 1 {
            pil_grey(img)
        } else {
            img.into_rgb8().into_raw()
        };
        Ok((px, w, h))
    }

    /// Image `i` transformed into `dst` (`C·H·W` floats, channel-major).
    fn load_into(
        &self,
        i: usize,
        dst: &mut [f32],
        plan: &Plan,
        seed: Option<u64>,
    ) -> Result<(), DataError> {
        let [c, h, w] = plan.input;
        let (px, iw, ih) = self.decode(i, c)?;
        let (pixels, flip) = match seed {
            Some(seed) => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let r = random_resized_crop(iw, ih, &mut rng);
                let out = resize_window(&px, iw, c, r, w, h, full(w, h));
                (out, plan.flip && rng.gen_bool(0.5))
            }
            None => (centre(&px, iw, ih, c, plan.resize, [h, w]), false),
        };
        let hw = h * w;
        for ch in 0..c {
            // ToTensor + Normalize as torchvision computes them (f32), tabulated.
            let (m, s) = (plan.mean[ch], plan.std[ch]);
            let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - m) / s);
            let plane = &mut dst[ch * hw..][..hw];
            for (out_row, in_row) in plane.chunks_exact_mut(w).zip(pixels.chunks_exact(w * c)) {
                if flip {
                    for (o, p) in out_row.iter_mut().rev().zip(in_row.chunks_exact(c)) {
                        *o = lut[usize::from(p[ch])];
                    }
                } else {
                    for (o, p) in out_row.iter_mut().zip(in_row.chunks_exact(c)) {
                        *o = lut[usize::from(p[ch])];
                    }
                }
            }
        }
        Ok(())
    }
}

/// The width and height a PNG file declares, read from the start of the file (`head`, at
/// least 24 bytes for an answer): the signature, then the `IHDR` chunk, which the format
/// requires first (length, type, then width and height, big-endian). `None` for anything
/// else (another format, or a PNG the decoder will refuse).
fn png_size(head: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let be = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    (head.len() >= 24 && head.starts_with(SIGNATURE) && &head[12..16] == b"IHDR")
        .then(|| (be(16), be(20)))
}

/// An error unless a `w × h` image is within `max_pixels` (and not empty).
fn check_pixels(path: &Path, w: u32, h: u32, max_pixels: u64) -> Result<(), DataError> {
    let pixels = u64::from(w) * u64::from(h);
    let detail = if pixels > max_pixels {
        format!(
            "the image header declares {w}×{h} = {pixels} pixels, more than the limit of \
             {max_pixels} (the max_pixels setting, --max-pixels on the command line; a \
             decompression bomb?); it was not decoded"
        )
    } else if pixels == 0 {
        format!("the image is empty ({w}×{h} pixels)")
    } else {
        return Ok(());
    };
    Err(DataError::Malformed {
        path: path.to_owned(),
        record: None,
        detail,
    })
}

/// Decodes the image file at `path` (a regular file; a FIFO or device is refused by name,
/// unopened; one larger than `max_pixels` pixels of the widest layout plus 64 MiB is refused
/// from its size). The header is read first: an image declaring more than `max_pixels`
/// pixels is refused before any decoder is made, with an error naming the file, its size
/// and the setting. The pixel buffer then follows the checked dimensions, while what the
/// PNG decoder allocates besides (metadata such as an ICC profile, and one row of pixels)
/// is bounded by [`MAX_IMAGE_METADATA_BYTES`] plus one row; more is an error naming the
/// limit. (The JPEG decoder takes no allocation limit: its metadata is not compressed, so
/// the file size bounds it.)
pub(crate) fn decode_image(path: &Path, max_pixels: u64) -> Result<image::DynamicImage, DataError> {
    let bad = |detail: String| DataError::Malformed {
        path: path.to_owned(),
        record: None,
        detail,
    };
    let (mut file, size) = fair_fs::open_regular(path, "an image file")?;
    let limit = max_pixels
        .saturating_mul(MAX_BYTES_PER_PIXEL)
        .saturating_add(IMAGE_METADATA_BYTES);
    if size > limit {
        return Err(fair_fs::FsError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
            what: format!(
                "an image file of at most {max_pixels} pixels (the max_pixels setting, \
                 --max-pixels)"
            ),
        }
        .into());
    }
    // A PNG's dimensions come first in the file: checked before any decoder is made (the
    // PNG decoder reads all metadata, and sizes a row, before it can be asked).
    let mut head = Vec::with_capacity(24);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 24), &mut head)
        .map_err(io("read", path))?;
    std::io::Seek::rewind(&mut file).map_err(io("read", path))?;
    let png = png_size(&head);
    if let Some((w, h)) = png {
        check_pixels(path, w, h, max_pixels)?;
    }
    let mut reader = image::ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io("read", path))?;
    // The PNG decoder's own allocation limit (only it uses one): metadata and one output
    // row. The pixel buffer is not counted in it; `check_pixels` bounds that.
    let budget =
        MAX_IMAGE_METADATA_BYTES + png.map_or(0, |(w, _)| u64::from(w) * MAX_BYTES_PER_PIXEL);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget);
    reader.limits(limits);
    let decode_error = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => bad(format!(
            "decoding needs more memory than allowed: the image's metadata (ICC profile, \
             EXIF, text chunks) may take at most {MAX_IMAGE_METADATA_BYTES} bytes \
             (MAX_IMAGE_METADATA_BYTES), and its pixels must fit in memory (the limit of \
             {max_pixels} pixels, the max_pixels setting, --max-pixels, admits them); real \
             metadata takes kilobytes (a decompression bomb?)"
        )),
        e => bad(format!("cannot decode the image: {e}")),
    };
    let decoder = reader.into_decoder().map_err(decode_error)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    check_pixels(path, w, h, max_pixels)?;
    image::DynamicImage::from_decoder(decoder).map_err(decode_error)
}

/// The settings of one batch, resolved.
struct Plan {
    input: [usize; 3],
    resize: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    flip: bool,
}

fn full(w: usize, h: usize) -> Rect {
    Rect { x: 0, y: 0, w, h }
}

/// Grey pixels as PIL's `convert("L")` gives them: grey images (with or without alpha) keep
/// their grey level; colour images (RGB, RGBA, palette expanded by the decoder) go through
/// ITU-R 601-2 luma in 16-bit fixed point, rounded:
/// `L = (19595·R + 38470·G + 7471·B + 0x8000) >> 16`. 16-bit images are first reduced to 8
/// bits by the decoder's scaling, which PIL does not share (it clips 16-bit grey).
fn pil_grey(img: image::DynamicImage) -> Vec<u8> {
    use image::DynamicImage as D;
    match img {
        D::ImageLuma8(g) => g.into_raw(),
        g @ (D::ImageLumaA8(_) | D::ImageLuma16(_) | D::ImageLumaA16(_)) => {
            g.into_luma8().into_raw()
        }
        colour => {
            let rgb = colour.into_rgb8().into_raw();
            rgb.chunks_exact(3)
                .map(|p| {
                    let [r, g, b] = [p[0], p[1], p[2]].map(u32::from);
                    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
                })
                .collect()
        }
    }
}

/// Python's `int(round(d / 2))` for a whole `d` (halves round to even), as
/// torchvision's `CenterCrop` places the crop.
fn half_to_even(d: usize) -> usize {
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
}

/// The output size of torchvision's `Resize(short)` for a `w × h` image: the shorter side
/// becomes `short`, the longer `⌊short · long / short_side⌋` (computed without overflow;
/// at most `usize::MAX`). Only the crop window of it is ever computed.
pub(crate) fn resized_size(w: usize, h: usize, short: usize) -> (usize, usize) {
    let long = |l: usize, s: usize| {
        usize::try_from(short as u128 * l as u128 / s.max(1) as u128).unwrap_or(usize::MAX)
    };
    if w <= h {
        (short, long(h, w))
    } else {
        (long(w, h), short)
    }
}

/// One crop axis: the first output pixel read from the resized image and where it lands.
/// Where the crop is larger than the image, torchvision pads with zeros (left / top:
/// ⌊excess / 2⌋).
fn crop_axis(size: usize, crop: usize) -> (usize, usize, usize) {
    if crop <= size {
        (half_to_even(size - crop), 0, crop)
    } else {
        (0, (crop - size) / 2, size)
    }
}

/// `Resize(resize)` + `CenterCrop(crop)` of an interleaved image: `crop[0] × crop[1]`
/// interleaved pixels (zeros where the crop overhangs the image).
fn centre(px: &[u8], iw: usize, ih: usize, c: usize, resize: usize, crop: [usize; 2]) -> Vec<u8> {
    let (rw, rh) = resized_size(iw, ih, resize);
    let (rw, rh) = (rw.max(1), rh.max(1));
    let [ch, cw] = crop;
    let (x0, dx, nx) = crop_axis(rw, cw);
    let (y0, dy, ny) = crop_axis(rh, ch);
    let win = resize_window(
        px,
        iw,
        c,
        full(iw, ih),
        rw,
        rh,
        Rect {
            x: x0,
            y: y0,
            w: nx,
            h: ny,
        },
    );
    if (nx, ny) == (cw, ch) {
        return win;
    }
    let mut out = vec![0u8; ch * cw * c];
    for r in 0..ny {
        out[((dy + r) * cw + dx) * c..][..nx * c].copy_from_slice(&win[r * nx * c..][..nx * c]);
    }
    out
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3):
/// ten tries at a random area and log-uniform aspect ratio, then the centre crop of the
/// clamped ratio.
fn random_resized_crop(w: usize, h: usize, rng: &mut impl Rng) -> Rect {
    let (scale, ratio) = ((0.08f64, 1.0f64), (3.0f64 / 4.0, 4.0f64 / 3.0));
    let area = (w * h) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..scale.1);
        let aspect = rng.gen_range(lr0..lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let y = rng.gen_range(0..=h - ch);
            let x = rng.gen_range(0..=w - cw);
            return Rect { x, y, w: cw, h: ch };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as usize).clamp(1, h))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as usize).clamp(1, w), h)
    } else {
        (w, h)
    };
    Rect {
        x: (w - cw) / 2,
        y: (h - ch) / 2,
        w: cw,
        h: ch,
    }
}

impl ImageSource for ImageFolder {
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
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor), DataError> {
        let [c, h, w] = input;
        if c != 1 && c != 3 {
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}': the model expects {c} channels; images give 1 (grey) or 3 (RGB)",
                self.name
            )));
        }
        transform.check_input(input, indices.len())?;
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            self.check_index(i)?;
        }
        if indices.is_empty() {
            let shape = [0, c as i64, h as i64, w as i64];
            return Ok((
                Tensor::zeros(shape, (Kind::Float, Device::Cpu)),
                Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
            ));
        }
        let per_channel = |v: &[f32]| {
            if v.len() == 1 {
                vec![v[0]; c]
            } else {
                v.to_vec()
            }
        };
        let augment = transform.augment.filter(|_| train);
        let (mean, std) = transform.normalization();
        let plan = Plan {
            input,
            resize: transform.resize.unwrap_or_else(|| default_resize(h, w)),
            mean: per_channel(&mean),
            std: per_channel(&std),
            flip: augment.is_some_and(|a| a.flip),
        };
        // One seed per image, drawn in order: the batch does not depend on the thread count.
        let seeds: Vec<Option<u64>> = indices
            .iter()
            .map(|_| augment.map(|_| rng.next_u64()))
            .collect();
        // The batch tensor is allocated once and filled chunk by chunk: a chunk of images is
        // decoded in parallel into one reused buffer, then copied image by image into place.
        // So the peak is the batch plus one chunk (a few images per thread) and one image,
        // not the batch twice.
        let per = c * h * w;
        let n = indices.len();
        let x = Tensor::empty(
            [n as i64, c as i64, h as i64, w as i64],
            (Kind::Float, Device::Cpu),
        );
        let threads = match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        };
        let chunk = (IMAGES_PER_THREAD * threads).clamp(1, n.max(1));
        let mut buffer = vec![0f32; chunk * per];
        for (k, (idx, seeds)) in indices.chunks(chunk).zip(seeds.chunks(chunk)).enumerate() {
            let values = &mut buffer[..idx.len() * per];
            let mut work = || {
                values
                    .par_chunks_mut(per)
                    .zip(idx.par_iter().zip(seeds.par_iter()))
                    .try_for_each(|(dst, (&i, &seed))| self.load_into(i, dst, &plan, seed))
            };
            match &self.pool {
                Some(pool) => pool.install(work),
                None => work(),
            }?;
            for (j, image) in values.chunks_exact(per).enumerate() {
                x.narrow(0, (k * chunk + j) as i64, 1)
                    .copy_(&Tensor::from_slice(image).view([1, c as i64, h as i64, w as i64]));
            }
        }
        drop(buffer);
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        Ok((x, Tensor::from_slice(&labels)))
    }
}

/// The default shorter side before the centre crop: `round(min(H, W) · 256 / 224)`.
pub fn default_resize(h: usize, w: usize) -> usize {
    (h.min(w) * 256 + 112) / 224
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_offsets_round_halves_to_even_like_python() {
        // Python: int(round(1 / 2)) = 0, round(3 / 2) = 2, round(5 / 2) = 2, round(7 / 2) = 4.
        let got: Vec<usize> = [0, 1, 2, 3, 4, 5, 7]
            .into_iter()
            .map(half_to_even)
            .collect();
        assert_eq!(got, [0, 0, 1, 2, 2, 2, 4]);
        assert_eq!(resized_size(500, 375, 256), (341, 256));
        assert_eq!(resized_size(300, 450, 256), (256, 384));
        assert_eq!(default_resize(224, 224), 256);
        assert_eq!(default_resize(32, 32), 37);
    }

    #[test]
    fn a_thin_image_is_resized_without_computing_its_whole_resized_size() {
        // A 1×10,000,000 image (within the default pixel limit) resized to a shorter side
        // of 256 would be 256 × 2,560,000,000: weights for every output row would need tens
        // of GB. Only the 4×4 crop window is computed.
        let (w, h) = (1, 10_000_000);
        assert_eq!(resized_size(w, h, 256), (256, 2_560_000_000));
        assert_eq!(resized_size(1, usize::MAX, usize::MAX).1, usize::MAX);
        let px = vec![200u8; w * h];
        let out = centre(&px, w, h, 1, 256, [4, 4]);
        assert_eq!(out, vec![200u8; 16]);
    }

    #[test]
    fn random_resized_crops_stay_inside_the_image() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (w, h) in [(500, 375), (10, 300), (300, 10), (1, 1), (64, 64)] {
            for _ in 0..200 {
                let r = random_resized_crop(w, h, &mut rng);
                assert!(
                    r.w >= 1 && r.h >= 1 && r.x + r.w <= w && r.y + r.h <= h,
                    "{r:?}"
                );
            }
        }
    }
}
