//! `fair-bench loader`: the streamed ImageFolder pipeline (`fair_data::ImageFolder` +
//! `Loader::prefetch`) against torchvision's `ImageFolder` + `DataLoader(num_workers = N)`
//! with the same evaluation transforms (Resize 256, CenterCrop 224, ToTensor, Normalize),
//! the same batch size and worker count, on a synthetic ImageFolder of JPEGs generated once
//! under `target/bench/loader/`. Each side runs as its own process; the bench samples the
//! resident memory of that process tree from outside (RSS and PSS summed over the process
//! and its worker processes, every 20 ms). Ratios are measured in the same run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_data::{ImageFolder, ImageSource, Loader, Transform};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::tables::{self, Markers};
use crate::{positive, read_json, reference_python, workspace_root, write_json};

/// The markers around the generated block of `docs/results.md`.
const BEGIN: &str = "<!-- bench loader: begin -->";
const END: &str = "<!-- bench loader: end -->";

/// Settings of the loader benchmark.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// JPEGs in the synthetic ImageFolder.
    #[arg(long, default_value_t = 20_000, value_parser = positive)]
    pub images: usize,
    /// Classes (sub-directories).
    #[arg(long, default_value_t = 100, value_parser = positive)]
    pub classes: usize,
    /// Decoding workers: rayon threads for fair-data, DataLoader worker processes for
    /// torchvision.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub workers: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub batch_size: usize,
    /// The reference Python (torch 2.11, torchvision 0.26) [default: $FAIR_PRUNER_PYTHON].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Do not write the figures into docs/results.md.
    #[arg(long)]
    pub no_docs: bool,
    /// Internal: run fair-data's side on this folder and print its figures.
    #[arg(long, hide = true, value_name = "DIR")]
    pub measure_ours: Option<PathBuf>,
}

/// Shorter side before the centre crop, and the crop (torchvision's ImageNet evaluation).
const RESIZE: usize = 256;
const CROP: usize = 224;

/// Runs `fair-bench loader`.
pub fn run(o: &Options) -> Result<()> {
    if let Some(root) = &o.measure_ours {
        return measure_ours(root, o);
    }
    let python = reference_python(o.python.as_deref(), "the loader benchmark")?;
    let root = workspace_root();
    let dir = root.join("target/bench/loader");
    let data = dir.join(format!("folder-{}x{}", o.classes, o.images));
    generate(&data, o.images, o.classes)?;

    eprintln!(
        "fair-data: {} images, {} workers, batch {}",
        o.images, o.workers, o.batch_size
    );
    let exe = std::env::current_exe().context("cannot find the fair-bench executable")?;
    let mut ours = Command::new(exe);
    ours.args(["loader", "--measure-ours"])
        .arg(&data)
        .args(["--workers", &o.workers.to_string()])
        .args(["--batch-size", &o.batch_size.to_string()]);
    let (ours_out, ours_mem) = sampled(ours)?;

    eprintln!(
        "torchvision: the same, DataLoader(num_workers={})",
        o.workers
    );
    let mut theirs = Command::new(&python);
    theirs
        .arg(root.join("xtask/bench/loader_reference.py"))
        .arg(&data)
        .args([o.workers, o.batch_size, RESIZE, CROP, 0].map(|v| v.to_string()));
    let (theirs_out, theirs_mem) = sampled(theirs)?;

    let rate =
        |v: &Value| v["images"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(f64::NAN);
    for (who, v) in [("fair-data", &ours_out), ("torchvision", &theirs_out)] {
        if v["images"].as_u64() != Some(o.images as u64) {
            bail!("{who} read {} images, expected {}", v["images"], o.images);
        }
    }
    let summary = json!({
        "images": o.images,
        "classes": o.classes,
        "workers": o.workers,
        "batch_size": o.batch_size,
        "resize": RESIZE,
        "crop": CROP,
        "machine_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "fair_data": {
            "seconds": ours_out["seconds"],
            "images_per_second": rate(&ours_out),
            "peak_rss_bytes": ours_mem.rss,
            "peak_pss_bytes": ours_mem.pss,
            "processes": ours_mem.processes,
            "checksum": ours_out["checksum"],
        },
        "torchvision": {
            "seconds": theirs_out["seconds"],
            "images_per_second": rate(&theirs_out),
            "peak_rss_bytes": theirs_mem.rss,
            "peak_pss_bytes": theirs_mem.pss,
            "processes": theirs_mem.processes,
            "checksum": theirs_out["checksum"],
        },
        "speed_ratio": rate(&ours_out) / rate(&theirs_out),
        "rss_ratio": ours_mem.rss as f64 / theirs_mem.rss as f64,
        "pss_ratio": ours_mem.pss as f64 / theirs_mem.pss as f64,
    });
    write_json(&dir.join("summary.json"), &summary)?;
    let md = markdown(&summary);
    println!("{md}");
    if !o.no_docs {
        let docs = root.join("docs/results.md");
        let text = std::fs::read_to_string(&docs)
            .with_context(|| format!("cannot read {}", docs.display()))?;
        fair_fs::write_atomic(&docs, splice(&text, &md)?.as_bytes())?;
        eprintln!("figures written into {}", docs.display());
    }
    Ok(())
}

/// The synthetic ImageFolder: `images` JPEGs (quality 90) of smooth colour patterns with
/// noise, 300–500 pixels a side, spread over `classes` directories; generated once (a
/// `done.json` records it) and reused.
fn generate(dir: &Path, images: usize, classes: usize) -> Result<()> {
    let done = dir.join("done.json");
    let want = json!({ "images": images, "classes": classes, "version": 2 });
    if read_json(&done).is_ok_and(|v| v == want) {
        return Ok(());
    }
    eprintln!("generating {images} JPEGs in {}", dir.display());
    let start = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    for c in 0..classes {
        std::fs::create_dir_all(dir.join(format!("c{c:03}")))?;
    }
    (0..images)
        .into_par_iter()
        .try_for_each(|i| -> Result<()> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let (w, h) = (rng.gen_range(300..=500u32), rng.gen_range(300..=500u32));
            let (a, b, p) = (
                rng.gen_range(0.005..0.05),
                rng.gen_range(0.005..0.05),
                rng.gen_range(0.0..6.0),
            );
            // Separable waves (tabulated) plus cheap noise: photo-like JPEG sizes, fast to make.
            let cols: Vec<[f64; 3]> = (0..w)
                .map(|x| std::array::from_fn(|c| (a * x as f64 + p + 2.0 * c as f64).sin()))
                .collect();
            let rows: Vec<f64> = (0..h).map(|y| (b * y as f64).cos()).collect();
            let mut noise = rng.r#gen::<u64>() | 1;
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb(std::array::from_fn(|c| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    let n = (noise % 17) as f64 - 8.0;
                    (127.0 + 100.0 * cols[x as usize][c] * rows[y as usize] + n).clamp(0.0, 255.0)
                        as u8
                }))
            });
            let path = dir.join(format!("c{:03}/img{i:06}.jpg", i % classes));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
                .encode_image(&img)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        })?;
    write_json(&done, &want)?;
    eprintln!("generated in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// fair-data's side (in its own process): every image in order, in batches, prefetched.
fn measure_ours(root: &Path, o: &Options) -> Result<()> {
    tch::set_num_threads(1);
    let start = Instant::now();
    let folder = ImageFolder::open(root)?.workers(o.workers)?;
    let t = Transform {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        resize: Some(RESIZE),
        ..Default::default()
    };
    let loader = Loader {
        source: &folder,
        transform: &t,
        input: [3, CROP, CROP],
        train: false,
    };
    let order: Vec<usize> = (0..folder.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (mut images, mut checksum) = (0i64, 0.0f64);
    std::thread::scope(|s| -> Result<()> {
        for batch in loader.prefetch(s, &order, o.batch_size, 2, &mut rng) {
            let (x, _) = batch?;
            images += x.size()[0];
            checksum += x
                .select(2, 0)
                .select(2, 0)
                .sum(tch::Kind::Double)
                .double_value(&[]);
        }
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({ "images": images, "seconds": seconds, "checksum": checksum })
    );
    Ok(())
}

/// Peak memory of a process tree.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    /// Largest sum of resident set sizes (bytes).
    rss: u64,
    /// Largest sum of proportional set sizes (shared pages split between their users).
    pss: u64,
    /// Most processes seen at once.
    processes: usize,
}

/// Runs `cmd` (stdout captured: one JSON line), sampling its process tree's memory.
fn sampled(mut cmd: Command) -> Result<(Value, Memory)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let mut peak = Memory::default();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let m = tree_memory(child.id());
        peak.rss = peak.rss.max(m.rss);
        peak.pss = peak.pss.max(m.pss);
        peak.processes = peak.processes.max(m.processes);
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().expect("reader thread")?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    let line = text.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("{cmd:?} printed no JSON figures: {text}"))?;
    Ok((v, peak))
}

/// A `kB` field of a `/proc` file, in bytes.
fn kb_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// RSS and PSS summed over `pid` and its descendants, now.
fn tree_memory(pid: u32) -> Memory {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Memory::default();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // The field after the command name (which may hold spaces) is the state, then the parent.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    let mut m = Memory::default();
    for p in tree {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        let rss = kb_field(&status, "VmRSS:");
        if rss > 0 {
            m.processes += 1;
        }
        m.rss += rss;
        m.pss += kb_field(&rollup, "Pss:");
    }
    m
}

fn mib(v: &Value) -> String {
    format!(
        "{:.0} MiB",
        v.as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0)
    )
}

/// The figures as Markdown.
fn markdown(s: &Value) -> String {
    let row = |who: &str, v: &Value| {
        format!(
            "| {who} | {:.0} | {:.1} s | {} | {} | {} |\n",
            v["images_per_second"].as_f64().unwrap_or(f64::NAN),
            v["seconds"].as_f64().unwrap_or(f64::NAN),
            mib(&v["peak_rss_bytes"]),
            mib(&v["peak_pss_bytes"]),
            v["processes"],
        )
    };
    let mut md = format!(
        "{} JPEGs ({} classes, 300–500 px a side), Resize({}) + CenterCrop({}) + ToTensor + \
         Normalize, batches of {}, {} workers, on {} CPU cores:\n\n",
        s["images"],
        s["classes"],
        s["resize"],
        s["crop"],
        s["batch_size"],
        s["workers"],
        s["machine_cpus"]
    );
    md += "| loader | images/s | time | peak RSS (tree) | peak PSS (tree) | processes |\n";
    md += "| --- | --- | --- | --- | --- | --- |\n";
    md += &row(
        &format!(
            "torchvision `ImageFolder` + `DataLoader(num_workers={})`",
            s["workers"]
        ),
        &s["torchvision"],
    );
    md += &row(
        &format!(
            "fair-data `ImageFolder` + `Loader::prefetch` ({} threads)",
            s["workers"]
        ),
        &s["fair_data"],
    );
    md += &format!(
        "\nRatios (fair-data / torchvision): speed **{:.2}×**, peak RSS **{:.2}×**, peak PSS \
         **{:.2}×**.\n",
        s["speed_ratio"].as_f64().unwrap_or(f64::NAN),
        s["rss_ratio"].as_f64().unwrap_or(f64::NAN),
        s["pss_ratio"].as_f64().unwrap_or(f64::NAN),
    );
    md
}

/// The markers of this bench's block in `docs/results.md`.
const MARKERS: Markers<'static> = Markers {
    begin: BEGIN,
    end: END,
    tool: "cargo xtask bench loader",
};

/// `text` with the block between the markers replaced by `md`, or, where neither marker is
/// there, the block appended.
fn splice(text: &str, md: &str) -> Result<String> {
    if !text.contains(BEGIN) && !text.contains(END) {
        let text = format!("{}\n\n{BEGIN}\n{END}\n", text.trim_end());
        return tables::splice(&text, md, MARKERS);
    }
    tables::splice(text, md, MARKERS).context("docs/results.md has a broken block")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_or_appended() {
        let t = splice("# R\n", "x\n").unwrap();
        assert!(
            t.starts_with("# R\n\n<!-- bench loader: begin -->")
                && t.ends_with("x\n<!-- bench loader: end -->\n"),
            "{t}"
        );
        assert!(t.contains("Written by `cargo xtask bench loader`"), "{t}");
        let again = splice(&format!("{t}after\n"), "y\n").unwrap();
        assert!(again.contains("y\n") && !again.contains("x\n"), "{again}");
        assert!(
            again.ends_with("y\n<!-- bench loader: end -->\nafter\n"),
            "{again}"
        );
        assert_eq!(again.matches(BEGIN).count(), 1);
        assert!(
            splice(
                "<!-- bench loader: end --> <!-- bench loader: begin -->",
                "z"
            )
            .is_err()
        );
        assert!(splice("<!-- bench loader: begin -->", "z").is_err());
    }

    #[test]
    fn proc_fields_parse() {
        assert_eq!(
            kb_field("Name: x\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            1234 * 1024
        );
        assert_eq!(kb_field("Pss:  10 kB\n", "VmRSS:"), 0);
        let m = tree_memory(std::process::id());
        assert!(m.rss > 0 && m.processes >= 1, "{m:?}");
    }
}
