//! The pod relay (`toma-cluster relay`, started by `up`): listens inside the pod gateway's network
//! namespace, where nft redirects pods' connections to it, and connects each one from the host's
//! namespace to 127.0.0.1, so the apiserver and the tests' services stay on loopback.
//!
//! A socket belongs to the namespace it was made in, and a thread's namespace is inherited by the
//! threads it starts. So the listener is bound after setns() into the gateway namespace, the
//! thread returns to the host's namespace, and only then does the runtime start: every connection
//! it makes is the host's.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;

use tokio::net::{TcpListener, TcpStream};

use crate::node::gateway::{API_SERVICE_ADDRESS, API_SERVICE_PORT, GATEWAY_ADDRESS, RELAY_PORT};
use crate::{Error, Result};

/// Where a connection to `original` goes on the host: 10.0.0.1:443 to the apiserver, 10.244.7.1:P
/// to 127.0.0.1:P. Anything else reached the relay without being redirected to it.
pub fn upstream(original: SocketAddrV4, apiserver_port: u16) -> Option<SocketAddrV4> {
    match (*original.ip(), original.port()) {
        (API_SERVICE_ADDRESS, API_SERVICE_PORT) => {
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, apiserver_port))
        }
        (GATEWAY_ADDRESS, port) => Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
        _ => None,
    }
}

/// Runs the relay until it is killed. `holder` is the PID of the gateway namespace's holder.
pub fn run(holder: u32, apiserver_port: u16, ready_file: &Path) -> Result<()> {
    let listener = bind_in_namespace(holder)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(Error::io("starting the runtime of", "the relay"))?;
    runtime.block_on(async {
        let listener =
            TcpListener::from_std(listener).map_err(Error::io("registering the listener of", "the relay"))?;
        std::fs::write(ready_file, "").map_err(Error::io("writing", ready_file))?;
        eprintln!("relay: listening on {GATEWAY_ADDRESS}:{RELAY_PORT} in the pod gateway's namespace");
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(relay(stream, peer, apiserver_port));
                }
                Err(error) => eprintln!("relay: accept: {error}"),
            }
        }
    })
}

/// Binds the listener inside the gateway namespace and returns this thread to its own.
fn bind_in_namespace(holder: u32) -> Result<std::net::TcpListener> {
    let own = "/proc/thread-self/ns/net";
    let gateway = format!("/proc/{holder}/ns/net");
    let own_namespace = File::open(own).map_err(Error::io("opening", own))?;
    let gateway_namespace = File::open(&gateway).map_err(Error::io("opening", &gateway))?;
    enter(&gateway_namespace).map_err(Error::io("entering the network namespace", &gateway))?;
    let bound = std::net::TcpListener::bind(SocketAddrV4::new(GATEWAY_ADDRESS, RELAY_PORT));
    enter(&own_namespace).map_err(Error::io("returning to the network namespace", own))?;
    let listener = bound.map_err(Error::io(
        "binding in the gateway namespace",
        GATEWAY_ADDRESS.to_string(),
    ))?;
    listener
        .set_nonblocking(true)
        .map_err(Error::io("configuring the listener of", "the relay"))?;
    Ok(listener)
}

fn enter(namespace: &File) -> std::io::Result<()> {
    // SAFETY: setns on a descriptor we hold open; it changes only this thread's namespace.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn relay(mut pod: TcpStream, peer: std::net::SocketAddr, apiserver_port: u16) {
    let original = match original_destination(&pod) {
        Ok(original) => original,
        Err(error) => {
            eprintln!("relay: {peer}: no original destination: {error}");
            return;
        }
    };
    let Some(target) = upstream(original, apiserver_port) else {
        eprintln!("relay: {peer} -> {original}: not a gateway address; closed");
        return;
    };
    let mut host = match TcpStream::connect(target).await {
        Ok(host) => host,
        Err(error) => {
            eprintln!("relay: {peer} -> {original} via {target}: {error}");
            return;
        }
    };
    eprintln!("relay: {peer} -> {original} via {target}");
    if let Err(error) = tokio::io::copy_bidirectional(&mut pod, &mut host).await {
        eprintln!("relay: {peer} -> {original} via {target}: {error}");
    }
}

/// The destination the pod asked for, before nft redirected it (netfilter's SO_ORIGINAL_DST).
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddrV4> {
    // SAFETY: sockaddr_in is plain data, all zeroes is a valid value.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `address`, which has that size.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut address as *mut libc::sockaddr_in).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)),
        u16::from_be(address.sin_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_service_goes_to_the_apiserver_and_the_gateway_to_the_same_loopback_port() {
        let api = upstream(SocketAddrV4::new(API_SERVICE_ADDRESS, 443), 34567);
        assert_eq!(api, Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 34567)));
        let service = upstream(SocketAddrV4::new(GATEWAY_ADDRESS, 40123), 34567);
        assert_eq!(service, Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40123)));
    }

    #[test]
    fn other_destinations_are_not_relayed() {
        assert_eq!(upstream(SocketAddrV4::new(API_SERVICE_ADDRESS, 80), 34567), None);
        assert_eq!(
            upstream(SocketAddrV4::new(Ipv4Addr::new(10, 244, 7, 20), 443), 34567),
            None
        );
    }
}
