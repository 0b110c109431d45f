//! What goes into toma's image, taken from the machine that built the binary: the binary, the
//! shared libraries and loader `ldd` names for it, the CA bundle, and passwd/group entries for
//! the non-root user. Everything is owned by root, readable but not writable by the user toma
//! runs as, so toma cannot change its own image (the chart also mounts it read-only).
//! No shell, no package manager: the same content distroless's `cc` image offers toma, and
//! nothing else.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::Result;
use crate::tar::Tree;

/// The user toma runs as; the chart's securityContext and distroless's `nonroot` use the same.
pub const USER: u32 = 65532;
pub const BINARY_PATH: &str = "/toma";
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The image's file tree for `binary`, reading libraries and certificates from this machine.
pub fn toma_tree(binary: &Path) -> Result<Tree> {
    let mut tree = Tree::default();
    tree.add_file(BINARY_PATH, 0o755, read(binary)?);
    let libraries = shared_libraries(binary)?;
    for library in &libraries {
        // Stored as a regular file at the path the loader looks for, whatever symlinks lead to
        // it on this machine.
        tree.add_file(library, 0o755, read(Path::new(library))?);
    }
    tree.add_file(CA_BUNDLE, 0o644, read(Path::new(CA_BUNDLE))?);
    tree.add_file("/etc/passwd", 0o644, passwd().into_bytes());
    tree.add_file("/etc/group", 0o644, group().into_bytes());
    // Without it glibc asks DNS before /etc/hosts; containers expect files first.
    tree.add_file("/etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec());
    // Scratch space for the process; the chart mounts the root read-only, so this is only
    // writable where a runtime leaves it so.
    tree.add_dir("/tmp", 0o1777);
    add_package_records(&mut tree, &libraries)?;
    Ok(tree)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

pub fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}:nonroot:/nonexistent:/sbin/nologin\n"
    )
}

pub fn group() -> String {
    format!("root:x:0:\nnonroot:x:{USER}:\n")
}

/// The libraries, and the dynamic loader, that `ldd` lists for `binary`; none for a static one.
fn shared_libraries(binary: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd on {}: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // ldd fails, and says so, on a static binary; anything else is an error.
        let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(format!("ldd {}: {}", binary.display(), all.trim()).into());
    }
    parse_ldd(&stdout)
}

/// Paths out of ldd's lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`. The vDSO lives in the kernel and has no path.
pub fn parse_ldd(output: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(format!("ldd: {line}").into());
        }
        let target = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            paths.push(path.to_string());
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// For each Debian package the image takes files from (glibc, libgcc, the CA bundle), its dpkg
/// record in /var/lib/dpkg/status.d/ and its copyright file, as distroless does: scanners and
/// SBOM tools read them to know which package versions the image carries, and the licences
/// travel with the libraries. Off Debian there is nothing to record.
fn add_package_records(tree: &mut Tree, libraries: &[String]) -> Result<()> {
    if Command::new("dpkg-query").arg("--version").output().is_err() {
        eprintln!("toma-image: no dpkg-query here; the image carries no package records");
        return Ok(());
    }
    let mut packages: Vec<String> = libraries.iter().filter_map(|lib| owning_package(lib)).collect();
    packages.push("ca-certificates".to_string());
    packages.sort();
    packages.dedup();
    for package in packages {
        let name = package.split(':').next().unwrap_or(&package).to_string();
        let record = Command::new("dpkg-query")
            .args(["--status", package.as_str()])
            .output()?;
        if !record.status.success() {
            return Err(format!("dpkg-query --status {package} failed").into());
        }
        tree.add_file(&format!("/var/lib/dpkg/status.d/{name}"), 0o644, record.stdout);
        let copyright = format!("/usr/share/doc/{name}/copyright");
        if let Ok(data) = fs::read(&copyright) {
            tree.add_file(&copyright, 0o644, data);
        }
    }
    Ok(())
}

/// The package that installed `path` ("libc6:amd64"), trying its canonical path too, since with
/// a merged /usr dpkg may know the file under either. None for a file no package installed.
fn owning_package(path: &str) -> Option<String> {
    let canonical = fs::canonicalize(path).ok()?.to_string_lossy().into_owned();
    [path, canonical.as_str()].into_iter().find_map(dpkg_search)
}

fn dpkg_search(path: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["--search", path])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6"; a path several packages share lists them
    // all, comma-separated, and the first is enough.
    let text = String::from_utf8(out.stdout).ok()?;
    let (packages, _) = text.lines().next()?.split_once(": ")?;
    Some(packages.split(", ").next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_loader_but_not_the_vdso() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(output).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_not_a_smaller_image() {
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn the_nonroot_user_and_group_are_65532() {
        assert!(passwd().lines().any(|l| l.starts_with("nonroot:x:65532:65532:")));
        assert!(group().lines().any(|l| l == "nonroot:x:65532:"));
    }
}
