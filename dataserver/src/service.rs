//! The `Blocks` gRPC service: token-checked block writes that pass down the
//! replica chain, and ranged reads.

use crate::block_store::{BlockStore, BlockStoreError};
use nimbus_client::blocks::{send_block, CHUNK};
use nimbus_client::MetaClient;
use nimbus_common::token::{Access, CheckedTokens, Verifier};
use nimbus_common::{BlockId, ServerId};
use nimbus_proto as pb;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Longest replica chain a write may name.
const MAX_CHAIN: usize = 8;
/// Most blocks one Sync may name (a commit writes at most 64 slots).
const MAX_SYNC_BLOCKS: usize = 256;

/// The block service of one data server.
pub struct BlockService {
    store: Arc<BlockStore>,
    tokens: CheckedTokens,
    meta: Arc<MetaClient>,
    id: ServerId,
    addr: String,
    max_block: u64,
    load: Arc<AtomicU32>,
}

/// Counts an operation in progress for as long as it lives.
struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn new(load: &Arc<AtomicU32>) -> InFlight {
        load.fetch_add(1, Ordering::Relaxed);
        InFlight(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BlockService {
    /// Serves `store` as server `id` at `addr`.
    pub fn new(
        store: Arc<BlockStore>,
        verifier: Verifier,
        meta: Arc<MetaClient>,
        id: ServerId,
        addr: String,
        max_block: u64,
        load: Arc<AtomicU32>,
    ) -> BlockService {
        BlockService {
            store,
            tokens: CheckedTokens::new(verifier),
            meta,
            id,
            addr,
            max_block,
            load,
        }
    }

    fn check(&self, token: &[u8], block: BlockId, access: Access) -> Result<(), Status> {
        self.tokens
            .check(token, block, access)
            .map_err(|e| Status::permission_denied(format!("{}: {e}", self.addr)))
    }

    fn store_error(&self, e: BlockStoreError) -> Status {
        let m = format!("{}: {e}", self.addr);
        match e {
            BlockStoreError::NotFound(_) => Status::not_found(m),
            BlockStoreError::Corrupt { .. } => Status::data_loss(m),
            // Full or failing disks: a writer should try other servers.
            BlockStoreError::NoSpace { .. } => pb::server_failed(self.id.0, Status::resource_exhausted(m)),
            BlockStoreError::TooLarge { .. } => Status::invalid_argument(m),
            BlockStoreError::Exists(_) => Status::already_exists(m),
            _ => pb::server_failed(self.id.0, Status::internal(m)),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockStore) -> Result<T, BlockStoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(|e| self.store_error(e)),
            Err(e) => Err(pb::server_failed(
                self.id.0,
                Status::internal(format!("{}: {e}", self.addr)),
            )),
        }
    }
}

/// A failed forward to the next server of the chain, `next`: unless a server
/// further down already said which one failed, or the next server refused
/// for a reason of its own (a bad token), the next one is the one that failed.
fn blame(next: Option<u64>, status: Status) -> Status {
    use tonic::Code;
    let failure = matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    );
    match next {
        Some(id) if failure && pb::failed_server(&status).is_none() => pb::server_failed(id, status),
        _ => status,
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::blocks_server::Blocks for BlockService {
    async fn write(&self, request: Request<Streaming<pb::WriteChunk>>) -> Result<Response<pb::WriteReply>, Status> {
        let _busy = InFlight::new(&self.load);
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::WriteChunk {
                part: Some(pb::write_chunk::Part::Header(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("a block write starts with its header")),
        };
        let block =
            BlockId::from_bytes(&header.block_id).ok_or_else(|| Status::invalid_argument("a block id is 16 bytes"))?;
        self.check(&header.token, block, Access::Write)?;
        if header.length > self.max_block {
            return Err(Status::invalid_argument(format!(
                "blocks are at most {} bytes",
                self.max_block
            )));
        }
        if header.chain.len() > MAX_CHAIN {
            return Err(Status::invalid_argument(format!(
                "a chain has at most {MAX_CHAIN} replicas"
            )));
        }
        // Take the whole block before storing any of it: a block is at most a
        // few MiB, and a write cut short must leave nothing behind.
        let mut data = Vec::with_capacity(header.length as usize);
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(pb::write_chunk::Part::Data(d)) => {
                    if data.len() as u64 + d.len() as u64 > header.length {
                        return Err(Status::invalid_argument("more data than the header announced"));
                    }
                    data.extend_from_slice(&d);
                }
                _ => return Err(Status::invalid_argument("a block write has one header")),
            }
        }
        if data.len() as u64 != header.length {
            return Err(Status::invalid_argument(format!(
                "block cut short: {} of {} bytes",
                data.len(),
                header.length
            )));
        }
        let data = Arc::new(data);

        let downstream = async {
            let Some(next) = header.chain.first() else {
                return Ok(None);
            };
            let forward = pb::WriteHeader {
                chain: header.chain[1..].to_vec(),
                chain_ids: header.chain_ids.get(1..).unwrap_or_default().to_vec(),
                ..header.clone()
            };
            let next_id = header.chain_ids.first().copied();
            let channel = self
                .meta
                .channel(next)
                .map_err(|e| blame(next_id, Status::unavailable(format!("{next}: {e}"))))?;
            send_block(channel, forward, &data)
                .await
                .map(Some)
                .map_err(|e| blame(next_id, e))
        };
        let local = {
            let data = data.clone();
            let durable = header.durable;
            self.blocking(move |s| s.put(block, &data, durable))
        };
        let (local, downstream) = tokio::join!(local, downstream);
        let crc = local?;
        let downstream = match downstream {
            Ok(d) => d,
            Err(e) => {
                // The write fails as a whole; our copy would be an orphan.
                let _ = self.blocking(move |s| s.delete(block)).await;
                return Err(e);
            }
        };
        let mut stored_on = vec![self.addr.clone()];
        stored_on.extend(downstream.into_iter().flat_map(|d| d.stored_on));
        Ok(Response::new(pb::WriteReply { crc32c: crc, stored_on }))
    }

    type ReadStream = ReadStream;

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        let _busy = InFlight::new(&self.load);
        if request.get_ref().blocks.len() > MAX_SYNC_BLOCKS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_SYNC_BLOCKS} blocks per sync"
            )));
        }
        let mut blocks = Vec::new();
        for b in &request.get_ref().blocks {
            let id =
                BlockId::from_bytes(&b.block_id).ok_or_else(|| Status::invalid_argument("a block id is 16 bytes"))?;
            self.check(&b.token, id, Access::Write)?;
            blocks.push(id);
        }
        // A block this server no longer holds was moved by repair or the
        // rebalancer, whose copies are written durably: each replica syncs
        // what it has.
        self.blocking(move |s| {
            blocks.iter().try_for_each(|id| match s.sync(*id) {
                Err(BlockStoreError::NotFound(_)) => Ok(()),
                other => other,
            })
        })
        .await?;
        Ok(Response::new(pb::SyncReply {}))
    }

    async fn read(&self, request: Request<pb::ReadRequest>) -> Result<Response<ReadStream>, Status> {
        let _busy = InFlight::new(&self.load);
        let r = request.into_inner();
        let block =
            BlockId::from_bytes(&r.block_id).ok_or_else(|| Status::invalid_argument("a block id is 16 bytes"))?;
        self.check(&r.token, block, Access::Read)?;
        let (offset, len) = (r.offset, r.length);
        let data = match self.blocking(move |s| s.read(block, offset, len)).await {
            Ok(d) => d,
            Err(status) => {
                if status.code() == tonic::Code::DataLoss {
                    tracing::error!(%block, "corrupt replica: {}", status.message());
                    self.meta.report_bad_replica(block, self.id.0, status.message()).await;
                }
                return Err(status);
            }
        };
        let chunks: Vec<Result<pb::ReadChunk, Status>> = data
            .chunks(CHUNK)
            .map(|c| Ok(pb::ReadChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
