//! Where a cluster keeps its state, and `cluster.env`: KEY=value lines that other scripts read
//! (hack/bench.sh reads APISERVER_PID, ETCD_PID and BIN from it).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The paths inside one state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Outside the state directory, so that it survives `down` removing the directory.
    pub fn lock_file(&self) -> PathBuf {
        let mut name = self.root.clone().into_os_string();
        name.push(".lock");
        name.into()
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.root.join("pki").join(file)
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }

    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.root.join(format!("{component}.pid"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    pub fn env_file(&self) -> PathBuf {
        self.root.join("cluster.env")
    }

    pub fn helm_values(&self) -> PathBuf {
        self.root.join("helm-values.yaml")
    }

    /// Everything of the node's: containerd's root and state, the kubelet's root, CNI config.
    pub fn node(&self, path: &str) -> PathBuf {
        self.root.join("node").join(path)
    }

    /// A string marker that every process started for this cluster carries on its command line.
    pub fn marker(&self) -> String {
        format!("{}/", self.root.display())
    }
}

/// The KEY=value lines of `cluster.env`, in the order they were set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvFile(Vec<(String, String)>);

impl EnvFile {
    pub fn read(path: &Path) -> Option<EnvFile> {
        let text = fs::read_to_string(path).ok()?;
        Some(EnvFile(
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn port(&self, key: &str) -> Option<u16> {
        self.get(key)?.parse().ok()
    }

    pub fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text: String = self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let tmp = path.with_extension("env.tmp");
        fs::write(&tmp, text).map_err(Error::io("writing", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))
    }
}

/// Writes a file readable only by its owner (keys, tokens, kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("creating", path))?;
    file.write_all(contents.as_bytes())
        .map_err(Error::io("writing", path))
}

pub fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(Error::io("writing", path))
}

pub fn create_dirs(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        fs::create_dir_all(path).map_err(Error::io("creating directory", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_keeps_order_and_replaces_values_in_place() {
        let dir = std::env::temp_dir().join(format!("toma-cluster-envfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.env");
        let mut env = EnvFile::default();
        env.set("BIN", "/cache/bin");
        env.set("API_PORT", 1234);
        env.set("BIN", "/other/bin");
        env.write(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "BIN=/other/bin\nAPI_PORT=1234\n"
        );
        let read = EnvFile::read(&path).unwrap();
        assert_eq!(read.port("API_PORT"), Some(1234));
        assert_eq!(read, env);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_file_lies_beside_the_state_dir_not_inside_it() {
        let layout = Layout::new("/tmp/toma-cluster");
        assert_eq!(layout.lock_file(), PathBuf::from("/tmp/toma-cluster.lock"));
        assert_eq!(layout.marker(), "/tmp/toma-cluster/");
    }
}
