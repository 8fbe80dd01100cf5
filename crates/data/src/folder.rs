//! A lazy ImageFolder: an index of file paths and labels, decoded batch by batch in parallel
//! with torchvision's standard transforms.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{DataError, io};
use crate::resample::{Rect, resize_window};
use crate::source::{ImageSource, stratified_indices};
use crate::transform::Transform;

/// Directory levels below a class directory that are searched for images.
const MAX_DEPTH: usize = 32;

/// Images decoded at once per decoding thread while a batch is built (the chunk that sits
/// next to the batch tensor; several per thread so uneven images balance out).
const IMAGES_PER_THREAD: usize = 4;

/// An ImageFolder tree as an index: one sub-directory of `root` per class (sorted by name),
/// the PNG and JPEG files under each (extensions `png`, `jpg`, `jpeg` in any case; searched
/// recursively and ordered like torchvision's `ImageFolder`: directories by path, files by
/// name). Only the paths and labels are held; images are decoded when a batch asks for them
/// ([`ImageSource::batch`]), in parallel on rayon's pool (or the pool of
/// [`ImageFolder::workers`]).
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
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Sub-directories and image files of `dir` (following links).
fn entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<OsString>), DataError> {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let e = e.map_err(io("read", dir))?;
        let p = e.path();
        if p.is_dir() {
            dirs.push(p);
        } else if is_image(&p) {
            files.push(e.file_name());
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// The name of a class directory (lossy for names that are not UTF-8).
fn class_name(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

impl ImageFolder {
    /// Indexes the tree at `root` (no image is opened): one class per sub-directory, sorted
    /// by name.
    pub fn open(root: &Path) -> Result<ImageFolder, DataError> {
        let (class_dirs, _) = entries(root)?;
        if class_dirs.is_empty() {
            return Err(DataError::Invalid(format!(
                "ImageFolder '{}' has no class sub-directories (expected root/<class>/<image>.png)",
                root.display()
            )));
        }
        let classes = class_dirs.iter().map(|d| class_name(d)).collect();
        ImageFolder::index(root, classes, class_dirs.into_iter().map(Some).collect())
    }

    /// Indexes the tree at `root` against the class list `classes` (typically the training
    /// split's [`ImageSource::classes`]), so that its labels mean the same classes: the
    /// sub-directory named `classes[k]` gets label `k`. A class without a sub-directory has
    /// no images; a sub-directory that is not in `classes` is an error naming it (its images
    /// would have no label).
    ///
    /// ```no_run
    /// use fair_data::{ImageFolder, ImageSource};
    /// let train = ImageFolder::open(std::path::Path::new("/data/imagenet/train"))?;
    /// let test = ImageFolder::open_with_classes(std::path::Path::new("/data/imagenet/test"), train.classes())?;
    /// assert_eq!(test.classes(), train.classes());
    /// # Ok::<(), fair_data::DataError>(())
    /// ```
    pub fn open_with_classes(root: &Path, classes: &[String]) -> Result<ImageFolder, DataError> {
        let mut label: std::collections::HashMap<&str, usize> = Default::default();
        for (k, c) in classes.iter().enumerate() {
            if label.insert(c, k).is_some() {
                return Err(DataError::Invalid(format!(
                    "ImageFolder '{}': the class list names '{c}' twice",
                    root.display()
                )));
            }
        }
        let (class_dirs, _) = entries(root)?;
        let mut dirs = vec![None; classes.len()];
        for dir in class_dirs {
            let name = class_name(&dir);
            let Some(&k) = label.get(name.as_str()) else {
                let shown: Vec<&str> = classes.iter().take(5).map(String::as_str).collect();
                return Err(DataError::Invalid(format!(
                    "ImageFolder '{}': the class directory '{}' is not one of the {} classes \
                     it is indexed against ({}{}; for a test split, the training split's), so \
                     its images would have no label",
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
            dirs[k] = Some(dir);
        }
        ImageFolder::index(root, classes.to_vec(), dirs)
    }

    /// The index of `root` with `classes`, class `k`'s images read from `dirs[k]` (none where
    /// it is `None`).
    fn index(
        root: &Path,
        classes: Vec<String>,
        dirs: Vec<Option<PathBuf>>,
    ) -> Result<ImageFolder, DataError> {
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        for (label, class_dir) in dirs.into_iter().enumerate() {
            let Some(class_dir) = class_dir else {
                continue;
            };
            // torchvision walks each class directory and sorts by the directory path.
            let mut dirs = vec![(class_dir, 0usize)];
            let mut found: Vec<(PathBuf, Vec<OsString>)> = Vec::new();
            while let Some((dir, depth)) = dirs.pop() {
                let (subdirs, names) = entries(&dir)?;
                if depth < MAX_DEPTH {
                    dirs.extend(subdirs.into_iter().map(|d| (d, depth + 1)));
                }
                found.push((dir, names));
            }
            found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
            for (dir, names) in found {
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
        })
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
            "image {i} is outside ImageFolder '{}' ({} images)",
            self.name,
            self.files.len()
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
        let path = self.path(i)?;
        let bad = |detail: String| DataError::Malformed {
            path: path.clone(),
            record: None,
            detail,
        };
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let img = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot decode the image: {e}")))?
            .decode()
            .map_err(|e| bad(format!("cannot decode the image: {e}")))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(bad("the image is empty (0 pixels)".into()));
        }
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
/// becomes `short`, the longer `⌊short · long / short_side⌋`.
pub(crate) fn resized_size(w: usize, h: usize, short: usize) -> (usize, usize) {
    if w <= h {
        (short, short * h / w)
    } else {
        (short * w / h, short)
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
        transform.check(c)?;
        if let Some([ch, cw]) = transform.crop
            && [ch, cw] != [h, w]
        {
            return Err(DataError::Invalid(format!(
                "transform crop [{ch}, {cw}] must equal the model's input height and width [{h}, {w}]"
            )));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Invalid(format!(
                "image {i} is outside '{}' ({} images)",
                self.name,
                self.len()
            )));
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
