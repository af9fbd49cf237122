//! Records' ciphertext on 3 Kubo peers of a private network, 2 copies each: any one peer can
//! die and every record stays readable; `ehr ipfs repair` makes the copies a replaced peer
//! held; a node outside the network cannot fetch a record even with its CID.

mod common;

use std::time::Duration;

use bytes::Bytes;
use ehr_share::chain::RecordId;
use ehr_share::config::Tools;
use ehr_share::ipfs::{KuboClient, Replicas};
use ehr_share::records::{RecordsClient, RecordsConfig};
use ehr_share::stack::{
    KuboNetwork, KuboNode, KuboOptions, free_port, kubo_peer_id, start_kubo, swarm_key,
};

struct Peer {
    opts: KuboOptions,
    node: Option<KuboNode>,
}

fn options(dir: &std::path::Path, name: &str, key: &str) -> KuboOptions {
    KuboOptions {
        bin: Tools::in_project(common::root()).ipfs,
        repo: dir.join(name),
        api_port: free_port().unwrap(),
        gateway_port: free_port().unwrap(),
        network: Some(KuboNetwork {
            host: "127.0.0.1".parse().unwrap(),
            swarm_port: free_port().unwrap(),
            swarm_key: key.to_owned(),
            peers: Vec::new(),
            api_token: None,
        }),
    }
}

/// Each peer's `Peering` lists all the others of `all` (their ids come from their fresh
/// repos), besides any it already lists.
async fn peer_up(mut all: Vec<KuboOptions>) -> Vec<Peer> {
    let mut ids = Vec::new();
    for o in &all {
        ids.push(kubo_peer_id(o).await.unwrap());
    }
    let addrs: Vec<String> = all
        .iter()
        .map(|o| {
            let n = o.network.as_ref().unwrap();
            format!("/ip4/{}/tcp/{}", n.host, n.swarm_port)
        })
        .collect();
    for (i, o) in all.iter_mut().enumerate() {
        let group: Vec<(String, String)> = (0..ids.len())
            .filter(|&j| j != i)
            .map(|j| (ids[j].clone(), addrs[j].clone()))
            .collect();
        o.network.as_mut().unwrap().peers.extend(group);
    }
    let mut out = Vec::new();
    for opts in all {
        let node = start_kubo(&opts, false).await.unwrap();
        out.push(Peer {
            opts,
            node: Some(node),
        });
    }
    out
}

fn client_of(peer: &Peer) -> KuboClient {
    KuboClient::new(format!("http://127.0.0.1:{}", peer.opts.api_port))
}

/// Kills the daemon itself (SIGKILL), not only its supervisor.
async fn kill9(peer: &mut Peer) {
    let mut node = peer.node.take().unwrap();
    if let Some(pid) = node.child.pid() {
        for child in children(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    node.child.stop(Duration::from_secs(5)).await;
}

fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

/// Which of `peers` hold a named pin of `id`'s ciphertext.
async fn holders(peers: &[KuboClient], id: RecordId) -> Vec<usize> {
    let name = format!("ehr-record:{id}");
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        if let Ok(pins) = p.pins_named(&name).await
            && pins.iter().any(|(_, n)| *n == name)
        {
            out.push(i);
        }
    }
    out
}

async fn put(
    client: &RecordsClient,
    patient: ehr_share::chain::PatientAddr,
    i: usize,
) -> (RecordId, Vec<u8>) {
    let body = format!("replicated record {i} ").repeat(2_000).into_bytes();
    let id = client
        .put(patient, Bytes::from(body.clone()), "text/plain", None)
        .await
        .unwrap();
    (id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_lost_peer_and_repair_restores_their_copies() {
    let dir = tempfile::tempdir().unwrap();
    let key = swarm_key();
    let mut peers = peer_up(
        (0..3)
            .map(|i| options(dir.path(), &format!("kubo{i}"), &key))
            .collect(),
    )
    .await;
    let clients: Vec<KuboClient> = peers.iter().map(client_of).collect();
    let replicas = Replicas::new(clients.clone(), 2).unwrap();

    let office = common::office().await;
    let nodes = common::nodes::start_many(office.address(), 5, &[]).await;
    let refs = common::nodes::refs(&nodes).await;
    let (patient, addr) = common::new_patient(&office).await;
    let client = RecordsConfig::new(refs, 3)
        .client(
            common::as_(&office, &patient),
            patient.clone(),
            replicas.clone(),
        )
        .unwrap();

    // Uploads: each record pinned on exactly 2 peers, spread over all 3; no marker left.
    let mut records = Vec::new();
    for i in 0..9 {
        records.push(put(&client, addr, i).await);
    }
    let mut per_peer = [0usize; 3];
    for (id, _) in &records {
        let h = holders(&clients, *id).await;
        assert_eq!(h.len(), 2, "record {id} is on peers {h:?}");
        for p in h {
            per_peer[p] += 1;
        }
    }
    assert!(
        per_peer.iter().all(|&n| n > 0),
        "copies per peer: {per_peer:?}"
    );
    for c in &clients {
        assert!(
            c.pins_named("ehr-upload:").await.unwrap().is_empty(),
            "a marker stayed"
        );
    }

    // Peer 2 dies: every record still reads back byte-identical, and uploads go on (2 up).
    kill9(&mut peers[2]).await;
    for (id, body) in &records {
        let got = client
            .get(*id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(&got.data[..], &body[..], "record {id}");
    }
    let (late, late_body) = put(&client, addr, 100).await;
    assert_eq!(holders(&clients[..2], late).await, vec![0, 1]);
    records.push((late, late_body));

    // With 1 peer up, an upload is refused (2 copies cannot be made) and leaves no copy.
    let lone = Replicas::new(vec![clients[0].clone(), clients[2].clone()], 2).unwrap();
    let lone_client = RecordsConfig::new(common::nodes::refs(&nodes).await, 3)
        .client(common::as_(&office, &patient), patient.clone(), lone)
        .unwrap();
    let before = clients[0].pins_named("ehr-record:").await.unwrap().len();
    let refused = lone_client
        .put(
            addr,
            Bytes::from_static(b"not enough peers"),
            "text/plain",
            None,
        )
        .await;
    assert!(refused.is_err(), "an upload with 1 of 2 peers was accepted");
    assert_eq!(
        clients[0].pins_named("ehr-record:").await.unwrap().len(),
        before
    );

    // Peer 2 is replaced by an empty one (same API port, a new identity and repo).
    let mut fresh = peers[2].opts.clone();
    fresh.repo = dir.path().join("kubo2-replacement");
    let fresh_id = kubo_peer_id(&fresh).await.unwrap();
    assert_ne!(fresh_id, kubo_peer_id(&peers[2].opts).await.unwrap());
    peers[2].node = Some(start_kubo(&fresh, false).await.unwrap());
    let lost: usize = {
        let mut n = 0;
        for (id, _) in &records {
            if holders(&clients, *id).await.len() < 2 {
                n += 1;
            }
        }
        n
    };
    assert!(lost > 0, "peer 2 held no copy");

    // `ehr ipfs repair` copies them onto the new peer over the private network.
    let ehr = common::ehr_bin();
    let mut cmd = std::process::Command::new(&ehr);
    cmd.args(["ipfs", "repair", "--json", "--replication", "2"]);
    for c in &clients {
        cmd.args(["--peer", c.base_url()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "repair failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["peers_up"], 3, "{report}");
    assert_eq!(report["records"], records.len(), "{report}");
    assert_eq!(report["under_replicated"], lost, "{report}");
    assert_eq!(report["pinned"], lost, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let mut on_replacement = 0;
    for (id, _) in &records {
        let h = holders(&clients, *id).await;
        assert_eq!(h.len(), 2, "record {id} after repair");
        on_replacement += usize::from(h.contains(&2));
    }
    assert_eq!(
        on_replacement, lost,
        "the replaced peer got back every copy it held"
    );
    // A second run finds nothing to do.
    let again = replicas.repair().await.unwrap();
    assert_eq!((again.under_replicated, again.pinned), (0, 0));

    // The copies are real: with peer 0 gone too, everything reads from peers 1 and 2.
    kill9(&mut peers[0]).await;
    for (id, body) in &records {
        let got = client
            .get(*id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(&got.data[..], &body[..], "record {id} after losing peer 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_private_network_cannot_fetch_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = swarm_key();
    let members = peer_up(vec![options(dir.path(), "member", &key)]).await;
    let member = client_of(&members[0]);
    let cid = member
        .add_bytes_named(
            Bytes::from_static(b"ciphertext of a record"),
            "ehr-record:test",
        )
        .await
        .unwrap();

    // An outsider with its own key, told the member's address and id, knows the CID.
    let mut outsider = options(dir.path(), "outsider", &swarm_key());
    let member_net = members[0].opts.network.as_ref().unwrap();
    outsider.network.as_mut().unwrap().peers = vec![(
        kubo_peer_id(&members[0].opts).await.unwrap(),
        format!("/ip4/127.0.0.1/tcp/{}", member_net.swarm_port),
    )];
    let outsiders = peer_up(vec![outsider]).await;
    let outside = client_of(&outsiders[0]);
    let fetched = outside
        .cat_stream_from_peers(&cid, Duration::from_secs(5))
        .await;
    assert!(
        matches!(fetched, Err(ehr_share::ipfs::IpfsError::NotFound { .. })),
        "an outsider fetched the record's ciphertext"
    );

    // The same outsider with the network's key gets it: the key is what kept it out.
    let mut insider = options(dir.path(), "insider", &key);
    insider.network.as_mut().unwrap().peers = vec![(
        kubo_peer_id(&members[0].opts).await.unwrap(),
        format!("/ip4/127.0.0.1/tcp/{}", member_net.swarm_port),
    )];
    let insiders = peer_up(vec![insider]).await;
    let inside = client_of(&insiders[0]);
    let got = inside.pin_add(&cid, "copy", Duration::from_secs(30)).await;
    assert!(got.is_ok(), "a member could not fetch: {got:?}");
    assert_eq!(inside.cat(&cid).await.unwrap(), b"ciphertext of a record");
}
