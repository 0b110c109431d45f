//! A tar writer that can only write reproducible archives: ustar headers, entries in path order,
//! owner 0:0, one fixed modification time, no user or group names. Two runs over the same tree
//! write the same bytes, which is what makes the image digest stable.

use std::collections::BTreeMap;

use crate::Result;

const BLOCK: usize = 512;

/// What one path in the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// A file tree keyed by relative path ("etc/passwd"). A BTreeMap keeps it in byte order, and a
/// path sorts before everything under it, so parents always come before their children.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// Adds a file and, as 0755 directories, every parent it needs. A second file at the same
    /// path replaces the first.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/');
        self.add_parents(path);
        self.nodes.insert(path.to_string(), Node::File { mode, data });
    }

    /// Adds a directory (and its parents); an existing directory takes the new mode.
    pub fn add_dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        self.add_parents(path);
        self.nodes.insert(path.to_string(), Node::Dir { mode });
    }

    fn add_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            self.nodes
                .entry(path[..end].to_string())
                .or_insert(Node::Dir { mode: 0o755 });
            end += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(path, node)| (path.as_str(), node))
    }

    /// The tree as a tar archive, every entry stamped with `mtime` (seconds since the epoch).
    pub fn to_tar(&self, mtime: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (path, node) in self.iter() {
            match node {
                Node::Dir { mode } => {
                    out.extend_from_slice(&header(&format!("{path}/"), *mode, 0, mtime, b'5')?);
                }
                Node::File { mode, data } => {
                    out.extend_from_slice(&header(path, *mode, data.len() as u64, mtime, b'0')?);
                    out.extend_from_slice(data);
                    out.resize(out.len().next_multiple_of(BLOCK), 0);
                }
            }
        }
        // The end of an archive is two zero blocks.
        out.resize(out.len() + 2 * BLOCK, 0);
        Ok(out)
    }
}

fn header(name: &str, mode: u32, size: u64, mtime: u64, kind: u8) -> Result<[u8; BLOCK]> {
    if name.len() > 100 {
        return Err(format!("{name}: longer than the 100 bytes a plain ustar name holds").into());
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let field = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(field.as_bytes());
    Ok(h)
}

/// Writes `value` as zero-padded octal filling the field, with the terminating NUL.
fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut tree = Tree::default();
        tree.add_file("/etc/ssl/certs/ca-certificates.crt", 0o644, b"pem".to_vec());
        tree.add_file("toma", 0o755, vec![7; 1000]);
        tree
    }

    #[test]
    fn parents_are_added_and_come_before_their_children() {
        let paths: Vec<_> = sample().iter().map(|(path, _)| path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/ssl",
                "etc/ssl/certs",
                "etc/ssl/certs/ca-certificates.crt",
                "toma"
            ]
        );
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_the_insertion_order() {
        let mut reversed = Tree::default();
        reversed.add_file("toma", 0o755, vec![7; 1000]);
        reversed.add_file("etc/ssl/certs/ca-certificates.crt", 0o644, b"pem".to_vec());
        assert_eq!(
            sample().to_tar(1_700_000_000).unwrap(),
            reversed.to_tar(1_700_000_000).unwrap()
        );
    }

    #[test]
    fn headers_carry_mode_size_mtime_root_owner_and_a_valid_checksum() {
        let tar = sample().to_tar(1_700_000_000).unwrap();
        // Four directory/file headers before toma's: etc/, etc/ssl/, etc/ssl/certs/, the bundle
        // (one header and one data block).
        let h = &tar[5 * BLOCK..6 * BLOCK];
        assert_eq!(&h[..5], b"toma\0");
        assert_eq!(&h[100..108], b"0000755\0");
        assert_eq!(&h[108..116], b"0000000\0", "uid 0");
        assert_eq!(&h[116..124], b"0000000\0", "gid 0");
        assert_eq!(&h[124..136], format!("{:011o}\0", 1000).as_bytes());
        assert_eq!(&h[136..148], format!("{:011o}\0", 1_700_000_000).as_bytes());
        let mut blanked = h.to_vec();
        blanked[148..156].fill(b' ');
        let sum: u32 = blanked.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&h[148..155], format!("{sum:06o}\0").as_bytes());
        // Data padded to a block, then two zero blocks.
        assert_eq!(tar.len(), 6 * BLOCK + 2 * BLOCK + 2 * BLOCK);
    }

    #[test]
    fn names_too_long_for_ustar_are_refused() {
        let mut tree = Tree::default();
        tree.add_file(&"x".repeat(101), 0o644, Vec::new());
        assert!(tree.to_tar(0).is_err());
    }
}
