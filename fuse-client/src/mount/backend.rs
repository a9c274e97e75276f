//! What an open file needs of the cluster, as a small trait: the mount's
//! file logic (buffers, inline small files, early uploads, folded
//! attributes, fsync) is tested against an in-memory fake, and runs against
//! [`MetaClient`] for real.

use nimbus_client::blocks::{FileCommit, WrittenBlock};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::encryption::Key;
use nimbus_common::{BlockId, Ino};
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use std::future::Future;

/// The calls files.rs and cache.rs make.
pub trait Backend: Send + Sync + 'static {
    /// A file's layout; with `access` (R/W bits) those rights are checked
    /// and the attributes come with it.
    fn layout(
        &self,
        caller: pb::Caller,
        ino: Ino,
        access: u32,
    ) -> impl Future<Output = Result<pb::Layout, ClientError>> + Send;
    /// Stores `data` as a new block of `ino` on its replicas.
    fn write_block(
        &self,
        ino: Ino,
        data: &[u8],
        durable: bool,
    ) -> impl Future<Output = Result<WrittenBlock, ClientError>> + Send;
    /// Where a block's replicas are, with a read token.
    fn locate(&self, block: BlockId) -> impl Future<Output = Result<pb::Location, ClientError>> + Send;
    /// Plaintext of a block from a known location (`key` None: stored in
    /// the clear).
    fn read_located(
        &self,
        block: BlockId,
        key: Option<&Key>,
        loc: &pb::Location,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send;
    /// Commits a file's new contents and folded attributes in one command.
    fn commit(
        &self,
        caller: pb::Caller,
        ino: Ino,
        commit: FileCommit<'_>,
    ) -> impl Future<Output = Result<pb::Attr, ClientError>> + Send;
    /// Makes blocks written without `durable` durable on their replicas.
    fn sync_blocks(&self, blocks: &[&WrittenBlock]) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Bytes of a block, wherever it is.
    fn read_block(
        &self,
        block: BlockId,
        key: Option<&Key>,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ClientError>> + Send {
        async move {
            let loc = self.locate(block).await?;
            self.read_located(block, key, &loc, offset, len).await
        }
    }
}

impl Backend for MetaClient {
    async fn layout(&self, caller: pb::Caller, ino: Ino, access: u32) -> Result<pb::Layout, ClientError> {
        match self
            .call_as(caller, Op::GetLayout(pb::GetLayout { ino: ino.0, access }))
            .await?
        {
            R::Layout(l) => Ok(l),
            other => Err(ClientError::Refused(format!("GetLayout answered {other:?}"))),
        }
    }

    async fn write_block(&self, ino: Ino, data: &[u8], durable: bool) -> Result<WrittenBlock, ClientError> {
        self.write_file_block(ino, data, durable).await
    }

    async fn locate(&self, block: BlockId) -> Result<pb::Location, ClientError> {
        MetaClient::locate(self, block).await
    }

    async fn read_located(
        &self,
        block: BlockId,
        key: Option<&Key>,
        loc: &pb::Location,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        MetaClient::read_located(self, block, key, loc, offset, len).await
    }

    async fn commit(&self, caller: pb::Caller, ino: Ino, commit: FileCommit<'_>) -> Result<pb::Attr, ClientError> {
        self.commit_file_as(caller, ino, commit).await
    }

    async fn sync_blocks(&self, blocks: &[&WrittenBlock]) -> Result<(), ClientError> {
        MetaClient::sync_blocks(self, blocks).await
    }
}
