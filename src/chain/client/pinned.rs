//! The contract's permission calls evaluated at one chosen block instead of whatever the
//! endpoint calls "latest".
//!
//! Why: a share node that bounds how old its view of the chain may be checks its endpoint's
//! head, then judges. If those were two requests against "latest", a load balancer over
//! replicas could send the head check to a fresh replica and the judging call to one that
//! lags, which still shows a revoked grant. Judged at the checked head's number, the lagging
//! replica has no such block and answers with an error, so the node refuses instead of
//! releasing on the old state.

use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::primitives::Bytes;
use alloy::rpc::client::{BatchRequest, Waiter};

use super::*;

/// The latest block as an endpoint reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Block number.
    pub number: u64,
    /// Block timestamp (unix seconds): the clock grants are judged by.
    pub time: u64,
    /// The endpoint's `finalized` block at the same moment, when asked
    /// ([`EhrChain::head_and_finalized`]) and the endpoint names one.
    pub finalized: Option<u64>,
}

/// [`EhrChain`]'s permission calls, each made at `block`.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    chain: &'a EhrChain,
    block: BlockId,
}

impl EhrChain {
    /// The permission calls at `block` (`BlockId::latest()`: as the endpoint stands).
    #[must_use]
    pub fn at(&self, block: BlockId) -> Pinned<'_> {
        Pinned { chain: self, block }
    }

    /// The endpoint's latest block.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn head(&self) -> Result<Head, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| ChainError::Decode("no latest block".into()))?;
        Ok(head_of(&block, None))
    }

    /// [`Self::head`] with the endpoint's `finalized` block, in one JSON-RPC batch request
    /// (an endpoint that does not know the tag, or has no finalized block yet, answers none).
    ///
    /// # Errors
    /// Transport errors of the latest block's lookup.
    pub async fn head_and_finalized(&self) -> Result<Head, ChainError> {
        let mut batch = BatchRequest::new(self.provider.client());
        let latest = add_block(&mut batch, BlockNumberOrTag::Latest)?;
        let finalized = add_block(&mut batch, BlockNumberOrTag::Finalized)?;
        batch.send().await?;
        let block = latest
            .await?
            .ok_or_else(|| ChainError::Decode("no latest block".into()))?;
        Ok(head_of(&block, finalized_number(finalized).await))
    }
}

/// A block's number and time as a [`Head`].
fn head_of(block: &alloy::rpc::types::Block, finalized: Option<u64>) -> Head {
    Head {
        number: block.header.number,
        time: block.header.timestamp,
        finalized,
    }
}

type BlockWaiter = Waiter<Option<alloy::rpc::types::Block>>;

/// Adds `eth_getBlockByNumber(tag)` (transaction hashes only) to `batch`.
fn add_block(
    batch: &mut BatchRequest<'_>,
    tag: BlockNumberOrTag,
) -> Result<BlockWaiter, ChainError> {
    Ok(batch.add_call("eth_getBlockByNumber", &(tag, false))?)
}

/// The number of the block a `finalized` lookup found; none when the endpoint names none or
/// does not know the tag (which fails nothing).
async fn finalized_number(lookup: BlockWaiter) -> Option<u64> {
    lookup.await.ok().flatten().map(|b| b.header.number)
}

/// Adds an `eth_call` of `data` to the contract at `to`, at `block`, to `batch`.
fn add_eth_call(
    batch: &mut BatchRequest<'_>,
    to: Address,
    data: &Bytes,
    block: BlockId,
) -> Result<Waiter<Bytes>, ChainError> {
    let tx = alloy::rpc::types::TransactionRequest::default()
        .to(to)
        .input(data.clone().into());
    Ok(batch.add_call("eth_call", &(tx, block))?)
}

/// A batched call's answer; an error answer is classified as [`pinned_error`] does.
async fn call_answer(call: Waiter<Bytes>) -> Result<Bytes, ChainError> {
    call.await
        .map_err(|e| pinned_error(alloy::contract::Error::TransportError(e)))
}

impl Pinned<'_> {
    /// The account registered at `addr`, if any.
    ///
    /// # Errors
    /// Transport errors (among them: an endpoint that does not have the block).
    pub async fn patient_account(&self, addr: PatientAddr) -> Result<Option<Address>, ChainError> {
        let a = self
            .chain
            .contract
            .patientAccount(addr.key())
            .call()
            .block(self.block)
            .await
            .map_err(pinned_error)?;
        Ok((a != Address::ZERO).then_some(a))
    }

    /// The contract's `checkAccess`: why `provider` may not read the patient's records (a
    /// revoked grant reads as `NoGrant`), and whether access is by break-glass.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn check_access_raw(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<(DenyReason, bool), ChainError> {
        let r = self
            .chain
            .contract
            .checkAccess(addr.key(), provider)
            .call()
            .block(self.block)
            .await
            .map_err(pinned_error)?;
        let reason =
            DenyReason::try_from(r.reason).map_err(|e| ChainError::Decode(e.to_string()))?;
        Ok((reason, r.emergency))
    }

    /// [`Self::check_access_raw`] with a revoked grant told apart from none (from the
    /// patient's events, which only name the reason and never decide it).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn check_access(
        &self,
        addr: PatientAddr,
        provider: Address,
    ) -> Result<(DenyReason, bool), ChainError> {
        let (reason, emergency) = self.check_access_raw(addr, provider).await?;
        Ok((
            self.chain.tell_revoked(addr, provider, reason).await?,
            emergency,
        ))
    }

    /// Whether `ingestor` may add records for the patient at `addr`: an ingestion service
    /// the records office allowed, and the patient has an active device.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn may_ingest(
        &self,
        ingestor: Address,
        addr: PatientAddr,
    ) -> Result<bool, ChainError> {
        self.chain
            .contract
            .mayIngest(ingestor, addr.key())
            .call()
            .block(self.block)
            .await
            .map_err(pinned_error)
    }

    /// The contract's `canRead` for an access at `access_block` and `access_time` (0, 0:
    /// none), as [`EhrChain::access_in`] found them.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn can_read_at(
        &self,
        requester: Address,
        proof: &RecordProof,
        access_block: u64,
        access_time: u64,
    ) -> Result<bool, ChainError> {
        self.chain
            .contract
            .canRead(
                requester,
                super::sol_proof(proof),
                access_block,
                access_time,
            )
            .call()
            .block(self.block)
            .await
            .map_err(pinned_error)
    }
}

impl Pinned<'_> {
    /// [`Self::can_read_at`], the hash of block `number` as the endpoint has it now (none: it
    /// has no such block) and the endpoint's `finalized` block number (none: it names none),
    /// asked in one JSON-RPC batch request: a share node checks that the block of a recent
    /// access event is still the chain's beside every judgement (two requests per release were
    /// twice the endpoint's work), and a hash seen in the same answer as a finalized block at
    /// or above it is final (one request reaches one replica behind a load balancer).
    ///
    /// The finalized block is none also when the endpoint refuses batches (the calls then go
    /// one by one, maybe to several replicas: `chain::unbatch`), and when not `asked` (a
    /// caller that could not use it spares the endpoint a block lookup per call).
    ///
    /// # Errors
    /// As [`Self::can_read_at`]; transport errors of the block lookup. The finalized lookup
    /// fails nothing: an endpoint that does not know the tag answers none.
    pub async fn can_read_and_block_hash(
        &self,
        requester: Address,
        proof: &RecordProof,
        access_block: u64,
        access_time: u64,
        number: u64,
        asked: bool,
    ) -> Result<(bool, Option<B256>, Option<u64>), ChainError> {
        let contract = &self.chain.contract;
        let judge = contract.canRead(
            requester,
            super::sol_proof(proof),
            access_block,
            access_time,
        );
        let mut batch = BatchRequest::new(self.chain.provider.client());
        let yes = add_eth_call(
            &mut batch,
            *contract.address(),
            judge.calldata(),
            self.block,
        )?;
        let block = add_block(&mut batch, BlockNumberOrTag::Number(number))?;
        let finalized = if asked {
            Some(add_block(&mut batch, BlockNumberOrTag::Finalized)?)
        } else {
            None
        };
        batch.send().await?;
        // Sent as single requests (the endpoint refuses batches), the finalized block may come
        // from another replica than the hash: it vouches for nothing then.
        let whole = !self.chain.batches_split();
        let yes = judge
            .decode_output(call_answer(yes).await?)
            .map_err(ChainError::from_contract)?;
        let hash = block.await?.map(|b| b.header.hash);
        let finalized = match finalized {
            Some(f) => finalized_number(f).await.filter(|_| whole),
            None => None,
        };
        Ok((yes, hash, finalized))
    }
}

/// What judging a write by `uploader` for `patient` takes from the chain (see
/// [`Pinned::writers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    /// The account registered for the patient, if any.
    pub patient_account: Option<Address>,
    /// `checkAccess(patient, uploader)` as the contract answers it (a revoked grant reads as
    /// `NoGrant`).
    pub reason: DenyReason,
    /// Access through break-glass (which opens reading only).
    pub emergency: bool,
}

/// Pairs asked in one JSON-RPC batch (two calls each). geth takes 1,000 calls a batch; hosted
/// endpoints cap batches lower, some at 50 calls, and a batch over the cap fails whole. A
/// request names a few pairs (a batch of uploads: one uploader, a few patients), so this
/// seldom splits one.
const WRITERS_PER_BATCH: usize = 25;

impl Pinned<'_> {
    /// For each `(patient, uploader)`, the patient's account and `checkAccess(patient,
    /// uploader)`, all asked at this block in one JSON-RPC batch request (per
    /// [`WRITERS_PER_BATCH`] pairs, the batches at once): a share node judges a batch of deposits or proofs with
    /// one request to its endpoint instead of two per pair, one after the other.
    ///
    /// # Errors
    /// Transport errors (the whole batch), a revert or an answer that does not decode.
    pub async fn writers(
        &self,
        pairs: &[(PatientAddr, Address)],
    ) -> Result<Vec<Writer>, ChainError> {
        // The batches at once (in order): a request naming many pairs waits for one
        // deadline at most, not one per batch.
        let batches = futures::future::try_join_all(
            pairs
                .chunks(WRITERS_PER_BATCH)
                .map(|chunk| self.writers_batch(chunk)),
        )
        .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn writers_batch(
        &self,
        pairs: &[(PatientAddr, Address)],
    ) -> Result<Vec<Writer>, ChainError> {
        let contract = &self.chain.contract;
        let to = *contract.address();
        let mut batch = BatchRequest::new(self.chain.provider.client());
        let mut waiters = Vec::with_capacity(pairs.len());
        for (patient, uploader) in pairs {
            let account = contract.patientAccount(patient.key());
            let access = contract.checkAccess(patient.key(), *uploader);
            waiters.push((
                add_eth_call(&mut batch, to, account.calldata(), self.block)?,
                add_eth_call(&mut batch, to, access.calldata(), self.block)?,
            ));
        }
        batch.send().await?;
        let mut out = Vec::with_capacity(pairs.len());
        for ((patient, uploader), (account, access)) in pairs.iter().zip(waiters) {
            let account = contract
                .patientAccount(patient.key())
                .decode_output(call_answer(account).await?)
                .map_err(ChainError::from_contract)?;
            let access = contract
                .checkAccess(patient.key(), *uploader)
                .decode_output(call_answer(access).await?)
                .map_err(ChainError::from_contract)?;
            out.push(Writer {
                patient_account: (account != Address::ZERO).then_some(account),
                reason: DenyReason::try_from(access.reason)
                    .map_err(|e| ChainError::Decode(e.to_string()))?,
                emergency: access.emergency,
            });
        }
        Ok(out)
    }
}

/// An error answer that is no revert (a block this endpoint does not have yet, state it has
/// pruned) means the endpoint cannot answer at that block now: unavailable, like a transport
/// error, rather than an answer this server does not understand.
pub(super) fn pinned_error(e: alloy::contract::Error) -> ChainError {
    match e {
        alloy::contract::Error::TransportError(t)
            if t.as_error_resp()
                .is_some_and(|r| !r.message.contains("revert")) =>
        {
            ChainError::Rpc(t)
        }
        other => ChainError::from_contract(other),
    }
}
