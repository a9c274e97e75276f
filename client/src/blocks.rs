//! File data: blocks allocated by the meta leader, sealed here with the key
//! that comes with the allocation, written down a chain of data servers, and
//! read (and opened) from whichever replica answers with good bytes.

use crate::counters::Counters;
use crate::{ClientError, MetaClient};
use nimbus_common::encryption::{self, Key};
use nimbus_common::tls::MAX_MESSAGE_BYTES;
use nimbus_common::BlockId;
use nimbus_proto as pb;
use nimbus_proto::blocks_client::BlocksClient;
use nimbus_proto::data_cluster_client::DataClusterClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;

/// Bytes per message when streaming a block.
pub const CHUNK: usize = 1 << 20;
/// How long one block transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Blocks named in one Sync call (data servers take up to 256).
const SYNC_BATCH: usize = 128;
/// Allocations tried before a write gives up.
const WRITE_ATTEMPTS: usize = 4;

/// A block written to every replica of its chain.
#[derive(Clone, Debug)]
pub struct WrittenBlock {
    pub id: BlockId,
    /// Plaintext bytes (the block as stored is [`encryption::sealed_len`] of it).
    pub len: u64,
    /// The block's key: what it was sealed with (None: stored in the clear).
    pub key: Option<Key>,
    pub crc32c: u32,
    pub server_ids: Vec<u64>,
    /// The replicas' addresses and the write token, for a later
    /// [`MetaClient::sync_blocks`].
    pub replicas: Vec<String>,
    pub token: Vec<u8>,
}

fn data_client(ch: Channel) -> DataClusterClient<Channel> {
    DataClusterClient::new(ch)
}

fn blocks_client(ch: Channel) -> BlocksClient<Channel> {
    BlocksClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Sends `data` as block `header.block_id` to `addr`, which forwards it down
/// `header.chain`.
pub async fn send_block(
    channel: Channel,
    header: pb::WriteHeader,
    data: &[u8],
) -> Result<pb::WriteReply, tonic::Status> {
    let mut messages = vec![pb::WriteChunk {
        part: Some(pb::write_chunk::Part::Header(header)),
    }];
    messages.extend(data.chunks(CHUNK).map(|c| pb::WriteChunk {
        part: Some(pb::write_chunk::Part::Data(c.to_vec())),
    }));
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    request.set_timeout(TRANSFER_TIMEOUT);
    blocks_client(channel).write(request).await.map(|r| r.into_inner())
}

/// Reads `[offset, offset+len)` of a block from one data server.
pub async fn fetch_block(
    channel: Channel,
    block: BlockId,
    token: Vec<u8>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, tonic::Status> {
    fetch_sized(channel, block, token, offset, len, len as usize).await
}

/// [`fetch_block`] into a buffer of `capacity` bytes (what the caller
/// expects to receive).
async fn fetch_sized(
    channel: Channel,
    block: BlockId,
    token: Vec<u8>,
    offset: u64,
    len: u64,
    capacity: usize,
) -> Result<Vec<u8>, tonic::Status> {
    let mut request = tonic::Request::new(pb::ReadRequest {
        block_id: block.0.to_vec(),
        token,
        offset,
        length: len,
    });
    request.set_timeout(TRANSFER_TIMEOUT);
    let mut stream = blocks_client(channel).read(request).await?.into_inner();
    // Sized up front: growing by doubling would copy a whole block again
    // (and touch twice its pages) for the last few bytes of a sealed one.
    let mut out = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.message().await? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// What one commit of a file carries (see [`MetaClient::commit_file_as`]).
#[derive(Default)]
pub struct FileCommit<'a> {
    /// Written blocks, by slot.
    pub slots: &'a [(u64, &'a WrittenBlock)],
    pub size: u64,
    /// Slot 0's whole contents, kept by the meta cluster (small files).
    pub inline: Option<Vec<u8>>,
    /// chmod/chown/utimens made on the open file, applied after the data.
    pub attrs: Option<pb::SetAttr>,
    /// Create the file first, under the inode number its session reserved
    /// (`create.ino`, the `ino` committed to): one command for all.
    pub create: Option<pb::MakeNode>,
}

/// Seals `data` as block `id`; big blocks on the blocking pool, so that the
/// runtime's workers go on meanwhile.
async fn seal(key: &Key, id: BlockId, data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let failed = |e: encryption::SealError| ClientError::Refused(format!("sealing block {id}: {e}"));
    if data.len() < (256 << 10) {
        return encryption::seal_block(key, &id.0, data).map_err(failed);
    }
    let (key, data) = (*key, data.to_vec());
    tokio::task::spawn_blocking(move || encryption::seal_block(&key, &id.0, &data))
        .await
        .map_err(|e| ClientError::Refused(format!("sealing block {id}: {e}")))?
        .map_err(failed)
}

/// Opens the chunks a ranged read of a sealed block fetched; (true, why)
/// if the replica's bytes are not the block's.
fn open(
    key: &Key,
    block: BlockId,
    offset: u64,
    len: u64,
    stored: Vec<u8>,
    expected: u64,
) -> Result<Vec<u8>, (bool, String)> {
    let plain = encryption::open_range_owned(key, &block.0, offset, len, stored).map_err(|e| (true, e.to_string()))?;
    if (plain.len() as u64) < expected {
        return Err((
            true,
            format!(
                "block {block} is cut short: {} bytes where {expected} were expected",
                plain.len()
            ),
        ));
    }
    Ok(plain)
}

impl MetaClient {
    /// Asks the leader for `replication` servers (0: the default) to hold a
    /// block of `len` bytes, avoiding `exclude`.
    pub async fn allocate(&self, len: u64, replication: u32, exclude: &[u64]) -> Result<pb::Allocation, ClientError> {
        self.allocate_for(None, len, replication, exclude).await
    }

    /// Like [`MetaClient::allocate`], for a block of file `ino`: with
    /// `replication` 0, the file's directory decides.
    pub async fn allocate_for(
        &self,
        ino: Option<nimbus_common::Ino>,
        len: u64,
        replication: u32,
        exclude: &[u64],
    ) -> Result<pb::Allocation, ClientError> {
        let req = pb::AllocateRequest {
            replication,
            length: len,
            exclude: exclude.to_vec(),
            ino: ino.map(|i| i.0).unwrap_or(0),
        };
        self.ensure_signed_in().await?;
        Counters::add(&self.counters.allocations, 1);
        self.on_leader(|ch| {
            let req = self.request(req.clone());
            async move { data_client(ch).allocate(req).await }
        })
        .await
    }

    /// Where a block's replicas are, with a read token.
    pub async fn locate(&self, block: BlockId) -> Result<pb::Location, ClientError> {
        let req = pb::LocateRequest {
            block_id: block.0.to_vec(),
        };
        self.ensure_signed_in().await?;
        Counters::add(&self.counters.locates, 1);
        self.on_leader(|ch| {
            let req = self.request(req.clone());
            async move { data_client(ch).locate(req).await }
        })
        .await
    }

    /// Writes `data` as a new block on `replication` servers; `durable` asks
    /// every replica to fsync before acknowledging. A server that refuses
    /// (full, unreachable) is avoided on the next attempt.
    pub async fn write_block(&self, data: &[u8], replication: u32, durable: bool) -> Result<WrittenBlock, ClientError> {
        self.write_block_for(None, data, replication, durable).await
    }

    /// Writes `data` as a new block of file `ino`, replicated as the file's
    /// directory says.
    pub async fn write_file_block(
        &self,
        ino: nimbus_common::Ino,
        data: &[u8],
        durable: bool,
    ) -> Result<WrittenBlock, ClientError> {
        self.write_block_for(Some(ino), data, 0, durable).await
    }

    async fn write_block_for(
        &self,
        ino: Option<nimbus_common::Ino>,
        data: &[u8],
        replication: u32,
        durable: bool,
    ) -> Result<WrittenBlock, ClientError> {
        let mut exclude = Vec::new();
        let mut last = String::new();
        let stored_len = match self.clear_blocks {
            true => data.len() as u64,
            false => encryption::sealed_len(data.len() as u64),
        };
        for _ in 0..WRITE_ATTEMPTS {
            let a = self.allocate_for(ino, stored_len, replication, &exclude).await?;
            let id = BlockId::from_bytes(&a.block_id).ok_or_else(|| ClientError::Refused("bad block id".into()))?;
            let Some(first) = a.replicas.first() else {
                return Err(ClientError::NoSpace("no replica allocated".into()));
            };
            let key = Key::from_bytes(&a.key).ok_or_else(|| {
                ClientError::Refused(
                    "the meta server gave no key with the block: it is older than encryption at rest".into(),
                )
            })?;
            let (key, sealed) = match self.clear_blocks {
                true => (None, data.to_vec()),
                false => (Some(key), seal(&key, id, data).await?),
            };
            let header = pb::WriteHeader {
                block_id: a.block_id.clone(),
                token: a.write_token.clone(),
                length: sealed.len() as u64,
                chain: a.replicas[1..].to_vec(),
                chain_ids: a.server_ids.get(1..).unwrap_or_default().to_vec(),
                durable,
            };
            Counters::add(&self.counters.block_writes, 1);
            Counters::add(&self.counters.block_write_bytes, data.len() as u64);
            match send_block(self.channel(first)?, header, &sealed).await {
                Ok(reply) => {
                    return Ok(WrittenBlock {
                        id,
                        len: data.len() as u64,
                        key,
                        crc32c: reply.crc32c,
                        server_ids: a.server_ids,
                        replicas: a.replicas,
                        token: a.write_token,
                    })
                }
                Err(s) => {
                    last = format!("{first}: {}", s.message());
                    match s.code() {
                        // The chain is only as good as its weakest server:
                        // avoid the one the refusal names, else the first
                        // (the one this client could not reach).
                        Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded | Code::Internal => {
                            match pb::failed_server(&s) {
                                Some(id) => exclude.push(id),
                                None => exclude.extend(a.server_ids.first()),
                            }
                        }
                        _ => return Err(ClientError::Refused(last)),
                    }
                }
            }
        }
        Err(ClientError::NoSpace(format!(
            "no data server accepted the block: {last}"
        )))
    }

    /// Makes blocks written without `durable` durable on every replica (an
    /// fsync after buffered writes), one Sync per server, in parallel.
    pub async fn sync_blocks(&self, blocks: &[&WrittenBlock]) -> Result<(), ClientError> {
        let mut by_server: std::collections::BTreeMap<&str, Vec<pb::SyncBlock>> = Default::default();
        for b in blocks {
            for addr in &b.replicas {
                by_server.entry(addr).or_default().push(pb::SyncBlock {
                    block_id: b.id.0.to_vec(),
                    token: b.token.clone(),
                });
            }
        }
        let mut calls = tokio::task::JoinSet::new();
        for (addr, blocks) in by_server {
            let channel = self.channel(addr)?;
            // A data server takes at most 256 blocks a call.
            for part in blocks.chunks(SYNC_BATCH) {
                let (channel, addr, blocks) = (channel.clone(), addr.to_owned(), part.to_vec());
                calls.spawn(async move {
                    let mut request = tonic::Request::new(pb::SyncRequest { blocks });
                    request.set_timeout(TRANSFER_TIMEOUT);
                    blocks_client(channel)
                        .sync(request)
                        .await
                        .map_err(|s| format!("{addr}: {}", s.message()))
                });
            }
        }
        while let Some(done) = calls.join_next().await {
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ClientError::DataUnavailable(format!("sync: {e}"))),
                Err(e) => return Err(ClientError::DataUnavailable(format!("sync: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads plaintext `[offset, offset+len)` of `block` (len 0: to its
    /// end), trying each replica; `key` None for a block stored in the clear.
    pub async fn read_block(
        &self,
        block: BlockId,
        key: Option<&Key>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let loc = self.locate(block).await?;
        self.read_located(block, key, &loc, offset, len).await
    }

    /// [`MetaClient::read_block`] from a location (replicas and read token)
    /// got earlier with [`MetaClient::locate`]: a reader that keeps them
    /// saves the leader a round trip per read. A replica that returns
    /// corrupt data, or bytes that fail to open (altered, swapped with
    /// another block's, cut short), is reported and the next one tried.
    pub async fn read_located(
        &self,
        block: BlockId,
        key: Option<&Key>,
        loc: &pb::Location,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut errors = Vec::new();
        let (at, want) = match key {
            Some(_) => encryption::stored_range(offset, len),
            None => (offset, len),
        };
        // What a whole replica yields: the block from `offset`, up to `len`.
        let whole = loc.length.saturating_sub(offset);
        let expected = if len == 0 { whole } else { whole.min(len) };
        let capacity = match (want, key) {
            (0, Some(_)) => encryption::sealed_len(loc.length).saturating_sub(at),
            (0, None) => whole,
            (n, _) => n,
        }
        .min(encryption::sealed_len(4 << 20)) as usize;
        for (addr, server) in loc.replicas.iter().zip(&loc.server_ids) {
            Counters::add(&self.counters.block_reads, 1);
            let fetched = fetch_sized(self.channel(addr)?, block, loc.read_token.clone(), at, want, capacity)
                .await
                .map_err(|s| (s.code() == Code::DataLoss, s.message().to_owned()));
            let opened = fetched.and_then(|data| match key {
                None => Ok(data),
                Some(key) => open(key, block, offset, len, data, expected),
            });
            match opened {
                Ok(data) => {
                    Counters::add(&self.counters.block_read_bytes, data.len() as u64);
                    return Ok(data);
                }
                Err((corrupt, message)) => {
                    if corrupt {
                        tracing::error!(%block, server, "bad replica: {message}");
                        self.report_bad_replica(block, *server, &message).await;
                    }
                    errors.push(format!("{addr}: {message}"));
                }
            }
        }
        Err(ClientError::DataUnavailable(format!(
            "no replica of block {block} could be read: {}",
            errors.join("; ")
        )))
    }

    /// Tells the leader a replica is bad; best effort.
    pub async fn report_bad_replica(&self, block: BlockId, server: u64, detail: &str) {
        let req = pb::BadReplicaReport {
            block_id: block.0.to_vec(),
            server_id: server,
            detail: detail.to_owned(),
        };
        let r = self
            .on_leader(|ch| {
                let req = req.clone();
                async move { data_client(ch).report_bad_replica(req).await }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!("could not report bad replica of {block} on {server}: {e}");
        }
    }

    /// The data servers, blocks and repair progress.
    pub async fn data_health(&self) -> Result<pb::DataHealth, ClientError> {
        self.on_leader(|ch| async move { data_client(ch).health(pb::ListServersRequest {}).await })
            .await
    }

    /// Drains (`draining`), re-activates (`active`) or removes (`removed`) a
    /// data server.
    pub async fn set_server_state(&self, server: u64, state: &str) -> Result<(), ClientError> {
        let req = pb::ServerStateRequest {
            server_id: server,
            state: state.to_owned(),
        };
        self.ensure_signed_in().await?;
        self.on_leader(|ch| {
            let req = self.request(req.clone());
            async move { data_client(ch).set_server_state(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Commits written blocks into slots of file `ino` and sets its size.
    pub async fn commit_write(
        &self,
        ino: nimbus_common::Ino,
        slots: &[(u64, &WrittenBlock)],
        size: u64,
    ) -> Result<pb::Attr, ClientError> {
        let commit = FileCommit {
            slots,
            size,
            ..FileCommit::default()
        };
        self.commit_file_as(self.caller.clone(), ino, commit).await
    }

    /// Commits a file's new contents and the attributes set on it, in one
    /// command, on behalf of `caller`.
    pub async fn commit_file_as(
        &self,
        caller: pb::Caller,
        ino: nimbus_common::Ino,
        commit: FileCommit<'_>,
    ) -> Result<pb::Attr, ClientError> {
        let FileCommit {
            slots,
            size,
            inline,
            attrs,
            create,
        } = commit;
        let r = self
            .call_as(
                caller,
                pb::ns_request::Op::CommitWrite(pb::CommitWrite {
                    ino: ino.0,
                    slots: slots
                        .iter()
                        .map(|(slot, b)| pb::SlotWrite {
                            slot: *slot,
                            block_id: b.id.0.to_vec(),
                            length: b.len,
                            crc32c: b.crc32c,
                            server_ids: b.server_ids.clone(),
                        })
                        .collect(),
                    size,
                    inline_data: inline,
                    attrs,
                    sealed: !self.clear_blocks,
                    create,
                }),
            )
            .await?;
        match r {
            pb::ns_reply::Result::Attr(a) => Ok(a),
            other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
        }
    }
}
