//! The DNS proxy (Istio's DNS capture, port 15053): A and AAAA queries for the names the
//! mesh knows are answered with their virtual addresses; names under the cluster domain it
//! does not know are NXDOMAIN; other names are forwarded to the resolvers of
//! `/etc/resolv.conf`, SERVFAIL when none answers. Every query is network input: parsed
//! with hickory's wire format, bounded in size, never a panic.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, Record, RecordType, rdata},
};
use mesh_config::registry::Registry;

use crate::compiled::CompiledConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    sync::{Semaphore, watch},
};

/// The largest query taken (EDNS's usual UDP payload).
pub const MAX_QUERY: usize = 4096;
/// The TTL of the mesh's answers (Istio's DNS proxy answers with 30 s).
const TTL: u32 = 30;
/// The cluster domain: names under it that the mesh does not know do not exist.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";
/// How long a forwarded query waits for its resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries in flight at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 256;

/// The names the mesh answers, built once per registry: every Service by its FQDN,
/// `NAME.NS.svc`, `NAME.NS`, and in the proxy's own namespace `NAME`; ServiceEntry hosts as
/// written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable(HashMap<String, Vec<IpAddr>>);

impl NameTable {
    /// The names of `registry`'s services with a single virtual address, for a proxy in
    /// `namespace`.
    pub fn build(registry: &Registry, namespace: &str) -> Self {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for svc in registry.services() {
            let ips: Vec<IpAddr> = svc.addresses.iter().filter(|c| c.is_single()).map(|c| c.addr()).collect();
            if ips.is_empty() || svc.hostname.starts_with('*') {
                continue;
            }
            let mut add = |n: String| names.entry(n.to_ascii_lowercase()).or_default().extend(ips.iter().copied());
            add(svc.hostname.clone());
            if let Some(short) = svc.hostname.strip_suffix(&format!(".{}.{CLUSTER_DOMAIN}", svc.namespace)) {
                add(format!("{short}.{}.svc", svc.namespace));
                add(format!("{short}.{}", svc.namespace));
                if svc.namespace == namespace {
                    add(short.to_string());
                }
            }
        }
        for ips in names.values_mut() {
            ips.sort();
            ips.dedup();
        }
        Self(names)
    }

    /// The addresses of `name` (any case, with or without the final dot).
    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.0.get(name.trim_end_matches('.').to_ascii_lowercase().as_str()).map(Vec::as_slice)
    }
}

/// What to do with a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// This reply.
    Reply(Vec<u8>),
    /// Ask an upstream resolver (the query as it came).
    Forward,
    /// Nothing: not a DNS query at all.
    Drop,
}

/// The answer to one query (`bytes`, as it came off the wire) from `names`.
pub fn answer(bytes: &[u8], names: &NameTable) -> Answer {
    if bytes.len() > MAX_QUERY {
        return Answer::Drop;
    }
    let Ok(query) = Message::from_vec(bytes) else {
        // Answer a query whose header could be read with FORMERR, as resolvers do.
        return match bytes {
            [a, b, flags, ..] if flags & 0x80 == 0 => {
                reply(Message::error_msg(u16::from_be_bytes([*a, *b]), OpCode::Query, ResponseCode::FormErr))
            }
            _ => Answer::Drop,
        };
    };
    if query.message_type() != MessageType::Query {
        return Answer::Drop;
    }
    let error = |code| reply(Message::error_msg(query.id(), query.op_code(), code));
    if query.op_code() != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    let [q] = query.queries() else { return error(ResponseCode::FormErr) };
    let name = q.name().to_ascii();
    let Some(ips) = names.get(&name) else {
        let under_cluster = name.trim_end_matches('.').to_ascii_lowercase().ends_with(CLUSTER_DOMAIN);
        return if under_cluster { respond(&query, ResponseCode::NXDomain, Vec::new()) } else { Answer::Forward };
    };
    // Known: the addresses of the asked family; another type has no data (NOERROR, empty).
    let records = ips
        .iter()
        .filter_map(|ip| match (ip, q.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => Some(RData::A(rdata::A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(rdata::AAAA(*v6))),
            _ => None,
        })
        .filter(|_| q.query_class() == DNSClass::IN)
        .map(|data| Record::from_rdata(q.name().clone(), TTL, data))
        .collect();
    respond(&query, ResponseCode::NoError, records)
}

fn respond(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Answer {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    m.add_queries(query.queries().iter().cloned());
    m.add_answers(answers);
    reply(m)
}

fn reply(m: Message) -> Answer {
    m.to_vec().map_or(Answer::Drop, Answer::Reply)
}

/// The SERVFAIL for `query` when no resolver answered it.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let m = Message::from_vec(query).ok()?;
    Message::error_msg(m.id(), m.op_code(), ResponseCode::ServFail).to_vec().ok()
}

/// The `nameserver`s of a resolv.conf text (port 53).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The proxy: the name table of the registry in force, and where other names go.
pub(crate) struct DnsProxy {
    control: Arc<CompiledConfig>,
    upstreams: Vec<SocketAddr>,
    table: ArcSwap<(usize, Arc<NameTable>)>,
    in_flight: Arc<Semaphore>,
}

impl DnsProxy {
    pub(crate) fn new(control: Arc<CompiledConfig>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            control,
            upstreams,
            table: ArcSwap::from_pointee((0, Arc::default())),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The name table, rebuilt only when the registry changed.
    fn names(&self) -> Arc<NameTable> {
        let registry = self.control.registry.load_full();
        let key = Arc::as_ptr(&registry) as usize;
        let current = self.table.load();
        if current.0 == key {
            return current.1.clone();
        }
        let table = Arc::new(NameTable::build(&registry, &self.control.me.namespace));
        self.table.store(Arc::new((key, table.clone())));
        table
    }

    /// One query's reply, forwarding when it must.
    async fn resolve(&self, query: &[u8]) -> Option<Vec<u8>> {
        match answer(query, &self.names()) {
            Answer::Reply(r) => Some(r),
            Answer::Drop => None,
            Answer::Forward => match self.forward(query).await {
                Some(r) => Some(r),
                None => servfail(query),
            },
        }
    }

    /// Ask each upstream resolver in turn over UDP.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let Ok(socket) = UdpSocket::bind(bind).await else { continue };
            if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; MAX_QUERY];
            if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf)).await {
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }

    /// Serve UDP on `udp` and TCP on `tcp` until `stop`.
    pub(crate) async fn serve(self: Arc<Self>, udp: UdpSocket, tcp: TcpListener, mut stop: watch::Receiver<bool>) {
        let udp = Arc::new(udp);
        let tcp_side = {
            let (me, mut stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let conn = tokio::select! {
                        c = tcp.accept() => c,
                        () = crate::serve::stopped(&mut stop) => return,
                    };
                    let Ok((mut conn, _)) = conn else { continue };
                    let Ok(permit) = me.in_flight.clone().try_acquire_owned() else { continue };
                    let me = me.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        // Length-prefixed messages, one after another, until the client closes.
                        while let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(10), conn.read_u16()).await {
                            let mut query = vec![0u8; usize::from(len)];
                            if usize::from(len) > MAX_QUERY || conn.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            let Some(reply) = me.resolve(&query).await else { return };
                            let Ok(n) = u16::try_from(reply.len()) else { return };
                            if conn.write_u16(n).await.is_err() || conn.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            })
        };
        let mut buf = vec![0u8; MAX_QUERY + 1];
        loop {
            let received = tokio::select! {
                r = udp.recv_from(&mut buf) => r,
                () = crate::serve::stopped(&mut stop) => break,
            };
            let Ok((n, from)) = received else { continue };
            if n > MAX_QUERY {
                continue;
            }
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else { continue };
            let (me, udp, query) = (self.clone(), udp.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(reply) = me.resolve(&query).await {
                    let _ = udp.send_to(&reply, from).await;
                }
            });
        }
        tcp_side.abort();
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{op::Query, rr::Name};
    use mesh_config::{
        load::{LoadOptions, load_str},
        registry::Locator,
    };
    use proptest::prelude::*;

    use super::*;

    fn table() -> NameTable {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 9080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\nspec: {clusterIP: 10.96.0.30, ports: [{name: tcp, port: 5432}]}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec: {hosts: [api.example.com], addresses: [240.240.0.9, 'fd00::9'], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS}\n";
        let snapshot = load_str("s.yaml", yaml, &LoadOptions::default()).into_snapshot();
        NameTable::build(&Registry::build(&snapshot, &Locator::new()), "default")
    }

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn replied(a: Answer) -> Message {
        match a {
            Answer::Reply(r) => Message::from_vec(&r).unwrap(),
            other => panic!("no reply: {other:?}"),
        }
    }

    fn addresses(m: &Message) -> Vec<String> {
        m.answers().iter().map(|r| r.data().to_string()).collect()
    }

    #[test]
    fn mesh_names_get_their_addresses_others_are_forwarded_or_do_not_exist() {
        let t = table();
        for name in
            ["reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local.", "REVIEWS."]
        {
            let m = replied(answer(&query(name, RecordType::A), &t));
            assert_eq!(
                (m.id(), m.response_code(), addresses(&m)),
                (7, ResponseCode::NoError, vec!["10.96.0.20".into()]),
                "{name}"
            );
        }
        // Another namespace: not by its bare name.
        assert_eq!(answer(&query("db", RecordType::A), &t), Answer::Forward);
        assert_eq!(addresses(&replied(answer(&query("db.data", RecordType::A), &t))), ["10.96.0.30"]);
        // A ServiceEntry host, both families.
        assert_eq!(addresses(&replied(answer(&query("api.example.com", RecordType::AAAA), &t))), ["fd00::9"]);
        // A known name, another type: no data.
        let mx = replied(answer(&query("reviews", RecordType::MX), &t));
        assert_eq!((mx.response_code(), mx.answers().len()), (ResponseCode::NoError, 0));
        // Under the cluster domain but unknown: NXDOMAIN; elsewhere: the resolvers'.
        let nx = replied(answer(&query("nope.default.svc.cluster.local", RecordType::A), &t));
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert_eq!(answer(&query("example.org", RecordType::A), &t), Answer::Forward);
        // Garbage with a header: FORMERR; less than a header: nothing.
        assert_eq!(replied(answer(&[0, 9, 1, 0, 0, 5], &t)).response_code(), ResponseCode::FormErr);
        assert_eq!(answer(&[1], &t), Answer::Drop);
        assert_eq!(
            nameservers("# x\nnameserver 10.0.0.10\nsearch a b\nnameserver ::1\n"),
            ["10.0.0.10:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    proptest! {
        /// The fuzz target (`benches/fuzz.sh` runs it at 10^6 cases): any bytes, and real
        /// queries cut or flipped anywhere, never panic and never answer past the limit.
        #[test]
        fn any_query_bytes_are_answered_safely(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            name in "[a-z]{1,10}(\\.[a-z]{1,10}){0,4}",
            cut in 0usize..64,
            flip in 0usize..64,
        ) {
            let t = table();
            let _ = answer(&bytes, &t);
            let mut q = query(&name, RecordType::A);
            if let Some(b) = q.get_mut(flip) { *b ^= 0x5a; }
            q.truncate(q.len().saturating_sub(cut));
            if let Answer::Reply(r) = answer(&q, &t) {
                prop_assert!(r.len() <= MAX_QUERY);
            }
        }
    }
}
