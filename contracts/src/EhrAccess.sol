// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title EhrAccess: who may see which patient's health records, and the audit trail of every try.
/// @notice Patients are known on chain only by a pseudonymous address `Addr = {aid, pid}` (area id,
///         patient id) issued by the records office. No names, no identifiers that are PHI.
/// @dev Every state-changing function is O(1) in storage writes except `access`, whose loop is
///      bounded by `MAX_ACCESS_BATCH`. Lists are append-only and read through paged views.
contract EhrAccess {
    // ---------------------------------------------------------------- types

    /// Lifecycle of a provider account. Only `Verified` providers can request, read or break glass.
    enum ProviderStatus {
        None,
        Pending,
        Verified,
        Suspended
    }

    /// Why an access attempt was denied. Logged in `AccessDenied`, never reverted.
    enum DenyReason {
        None,
        UnknownRecord, // not returned since version 3: `access` names the patient, share nodes match records
        NotProvider,
        UnverifiedProvider,
        SuspendedProvider,
        NoGrant,
        Revoked, // not returned since version 3: a revoked grant is cleared, so it reads as NoGrant
        Expired
    }

    /// What a provider may do with one patient's records now: the grant and the open
    /// emergency share one slot, so a revoke ends both by clearing it (and earns the refund
    /// that keeps a revoke under 26,000 gas). When it was granted or revoked is in the events.
    struct Grant {
        uint40 expiresAt; // 0: no grant; type(uint40).max when open-ended
        uint48 sinceBlock; // block of the latest grant or emergency opening: accesses count after it
        uint40 emergencyUntil; // end of the open emergency; 0 when none
        uint128 patient; // the patient key it was given under (a revoke names it; checked here)
    }

    /// The last three emergency openings of a provider for one patient (a sliding 24 h window).
    struct Openings {
        uint48 opened0;
        uint48 opened1;
        uint48 opened2;
    }

    /// One provider; one storage slot.
    struct Provider {
        ProviderStatus status;
        uint32 deniedCount;
        uint64 registeredAt;
    }

    /// One anchored Merkle root of records (one record is a root of one leaf); one slot.
    struct Root {
        address anchorer;
        uint64 anchoredAt;
        uint32 count; // records under it
    }

    /// A patient's wearable or home device: a write-only delegate whose signed readings an
    /// ingestor seals into the patient's records. One slot. A device key serves one patient for
    /// good: once revoked it is not registered again, so its old signed readings keep naming
    /// whose they were.
    struct Device {
        uint128 patient; // 0: never registered
        uint8 kind; // 1 to MAX_DEVICE_KIND
        uint40 addedAt;
        uint40 revokedAt; // 0: active
    }

    /// Where a record sits: its leaf's fields and its inclusion proof. Share nodes keep it with
    /// their shares and present it to `canRead`; the record id is derived from it, so a proof
    /// binds the record to its uploader and patient.
    struct RecordProof {
        uint128 patient;
        address author;
        bytes32 salt;
        bytes32 digest; // keyed digest of the record (HMAC under a key inside its sealed block)
        bytes32 root;
        bytes32[] proof; // sibling hashes from the leaf up (pairs hashed in sorted order)
    }

    // ---------------------------------------------------------------- constants

    /// The contract's interface version; `ehr deploy` records it, share nodes and the gateway
    /// refuse a deployment of another version.
    uint16 public constant VERSION = 5;
    /// How long a break-glass emergency access lasts.
    uint64 public constant BREAK_GLASS_DURATION = 1 hours;
    /// Emergency openings a provider may make per patient per 24 hours.
    uint8 public constant MAX_EMERGENCIES_PER_DAY = 3;
    /// Highest emergency reason code (HL7 v3 PurposeOfUse): 1 ETREAT emergency treatment,
    /// 2 BTG break the glass, 3 ERTREAT emergency room treatment, 4 DISASTER, 5 THREAT.
    uint8 public constant MAX_EMERGENCY_REASON = 5;
    /// EIP-712 type of the records office's voucher that lets one account claim one `Addr`.
    bytes32 public constant PATIENT_VOUCHER_TYPEHASH =
        keccak256("PatientVoucher(uint64 aid,uint64 pid,address account,uint64 deadline)");
    /// How long after an allowed access transaction a share node may release shares.
    uint64 public constant ACCESS_WINDOW = 30 minutes;
    /// Upper bound on the records under one anchored root.
    uint32 public constant MAX_BATCH = 65_536;
    /// Upper bound on records per access transaction (keeps the loop bounded).
    uint256 public constant MAX_ACCESS_BATCH = 32;
    /// Highest device kind code: 1 watch, 2 ring, 3 chest strap, 4 pulse oximeter, 5 blood
    /// pressure cuff, 6 glucose meter, 7 thermometer, 8 phone.
    uint8 public constant MAX_DEVICE_KIND = 8;

    /// An open-ended grant in events and in the `expiresAt` arguments' sense.
    uint64 private constant OPEN_ENDED = type(uint64).max;
    /// An open-ended grant as stored (times are 40-bit: good until the year 36812).
    uint40 private constant OPEN_ENDED_STORED = type(uint40).max;

    // ---------------------------------------------------------------- storage

    /// Unique per deployment (chain, address, block, time, parent hash, prevrandao): a contract redeployed at
    /// the same address on a reset chain has another id, so shares and signatures bound to the
    /// old deployment are useless there.
    bytes32 public immutable deploymentId;
    /// EIP-712 domain separator of this deployment (vouchers).
    bytes32 public immutable domainSeparator;

    /// The records office ("EHR manager").
    address public manager;
    /// Nominee of a two-step manager transfer.
    address public pendingManager;

    // One slot per patient: patient calls name their key and are checked against it, so no
    // reverse map is written at registration. Lists are not stored: a patient's grants and
    // requests come from the events (the gateway's index), their records from the share
    // nodes, which keep each record's proof to an anchored root.

    /// The account of each patient key.
    mapping(uint128 => address) public patientAccount;
    /// Providers by account.
    mapping(address => Provider) public providers;
    /// Grant and open emergency of each (patient account, provider). Keyed by the patient's
    /// account, not its key: a revoke then finds the caller's own grant without first reading
    /// whose key it is, and nobody else's call can reach it.
    mapping(address => mapping(address => Grant)) private grantOf;
    /// Emergency openings of each (patient, provider), for the daily limit.
    mapping(uint128 => mapping(address => Openings)) public openings;
    /// Anchored roots. Records themselves are not stored: each is a leaf under a root, and its
    /// proof is kept with its shares.
    mapping(bytes32 => Root) public roots;
    /// Devices by their key's address.
    mapping(address => Device) public devices;
    /// Active devices of each patient. A patient with none has not asked for readings to be
    /// ingested, and no ingestor may add records for them.
    mapping(uint128 => uint32) public activeDevices;
    /// Ingestion services the records office verified: they take devices' signed readings and
    /// seal them into records of patients with an active device. They can add records, never
    /// read them.
    mapping(address => bool) public ingestors;

    // ---------------------------------------------------------------- events

    /// @notice The records office nominated a successor.
    /// @param current The records office now.
    /// @param nominee The account that may accept the role.
    event ManagerTransferStarted(address indexed current, address indexed nominee);
    /// @notice The records office role moved (also at deployment, from the zero address).
    /// @param previous The former records office.
    /// @param current The records office from now on.
    event ManagerTransferred(address indexed previous, address indexed current);
    /// @notice A patient address was issued to an account.
    /// @param patient The patient key (`aid << 64 | pid`).
    /// @param account The patient's account.
    /// @param aid Area id.
    /// @param pid Patient id.
    event PatientRegistered(uint128 indexed patient, address indexed account, uint64 aid, uint64 pid);
    /// @notice An account registered as a provider; it waits for verification.
    /// @param provider The provider's account.
    event ProviderRegistered(address indexed provider);
    /// @notice The records office verified a provider.
    /// @param provider The provider.
    /// @param by The records office.
    event ProviderVerified(address indexed provider, address indexed by);
    /// @notice The records office suspended a provider.
    /// @param provider The provider.
    /// @param by The records office.
    event ProviderSuspended(address indexed provider, address indexed by);
    /// @notice A verified provider asked a patient for access.
    /// @param patient The patient key.
    /// @param provider The provider.
    event AccessRequested(uint128 indexed patient, address indexed provider);
    /// @notice The patient declined a provider's request.
    /// @param patient The patient key.
    /// @param provider The provider.
    event RequestDeclined(uint128 indexed patient, address indexed provider);
    /// @notice The patient granted a provider access.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param expiresAt Unix seconds; `type(uint64).max` when open-ended.
    event GrantIssued(uint128 indexed patient, address indexed provider, uint64 expiresAt);
    /// @notice The patient revoked a provider's grant.
    /// @param patient The patient key.
    /// @param provider The provider.
    event GrantRevoked(uint128 indexed patient, address indexed provider);
    /// @notice A Merkle root of records was anchored. It names no patient: a root is anyone's
    ///         commitment, and what it holds is proven to share nodes leaf by leaf.
    /// @param root The root (the leaf itself for one record).
    /// @param anchorer Who sent it (an uploader, or a gateway batching uploads).
    /// @param count Records under it.
    event Anchored(bytes32 indexed root, address indexed anchorer, uint32 count);
    /// @notice An access transaction was allowed for one record.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param recordId The record.
    /// @param emergency Allowed through break-glass.
    event AccessAllowed(uint128 indexed patient, address indexed provider, bytes32 indexed recordId, bool emergency);
    /// @notice An access transaction was denied for one record (logged, not reverted).
    /// @param patient The patient key (0 for an unknown record).
    /// @param provider The provider who tried.
    /// @param recordId The record.
    /// @param reason Why (see `DenyReason`).
    /// @param deniedCount The provider's denied attempts so far.
    event AccessDenied(
        uint128 indexed patient, address indexed provider, bytes32 indexed recordId, DenyReason reason, uint32 deniedCount
    );
    /// @notice A provider opened emergency access to a patient.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param reason HL7 v3 PurposeOfUse code (1 ETREAT .. 5 THREAT).
    /// @param until When it ends, unix seconds.
    event BreakGlassOpened(uint128 indexed patient, address indexed provider, uint8 reason, uint64 until);
    /// @notice An emergency access ended early (the patient ended it, or revoked the provider).
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param by The patient's account.
    event BreakGlassEnded(uint128 indexed patient, address indexed provider, address indexed by);

    /// @notice A patient registered a device, which may now send readings for them.
    /// @param patient The patient key.
    /// @param device The device key's address.
    /// @param kind Device kind (see `MAX_DEVICE_KIND`).
    /// @param label A short label the patient chose (UTF-8, zero-padded; no PHI).
    event DeviceAdded(uint128 indexed patient, address indexed device, uint8 kind, bytes32 label);

    /// @notice A patient revoked a device: its readings are refused from now on.
    /// @param patient The patient key.
    /// @param device The device key's address.
    event DeviceRevoked(uint128 indexed patient, address indexed device);

    /// @notice The records office allowed or stopped an ingestion service.
    /// @param ingestor The service's account.
    /// @param allowed Whether it may add records of patients with an active device.
    event IngestorSet(address indexed ingestor, bool allowed);

    // ---------------------------------------------------------------- errors

    /// @notice Only the records office may do this.
    /// @param caller The caller.
    error NotManager(address caller);
    /// @notice Only the nominated records office may accept.
    /// @param caller The caller.
    error NotPendingManager(address caller);
    /// @notice The zero address is not allowed here.
    error ZeroAddress();
    /// @notice Both parts of a patient address must be non-zero.
    /// @param aid Area id.
    /// @param pid Patient id.
    error InvalidPatientAddr(uint64 aid, uint64 pid);
    /// @notice The patient address is already issued.
    /// @param aid Area id.
    /// @param pid Patient id.
    error PatientAddrTaken(uint64 aid, uint64 pid);
    /// @notice The account is already a patient or a provider.
    /// @param account The account.
    error AccountHasRole(address account);
    /// @notice Only the patient's own account may do this.
    /// @param caller The caller.
    /// @param patient The patient key named.
    error NotPatient(address caller, uint128 patient);
    /// @notice No patient has this address.
    /// @param aid Area id.
    /// @param pid Patient id.
    error UnknownPatient(uint64 aid, uint64 pid);
    /// @notice The account is not a registered provider.
    /// @param provider The account.
    error UnknownProvider(address provider);
    /// @notice Only a verified provider may do this.
    /// @param provider The caller.
    error ProviderNotVerified(address provider);
    /// @notice The provider is verified already.
    /// @param provider The provider.
    error ProviderAlreadyVerified(address provider);
    /// @notice Only a pending or verified provider can be suspended.
    /// @param provider The provider.
    error ProviderNotActive(address provider);
    /// @notice A grant must expire in the future.
    /// @param expiresAt The expiry given.
    error ExpiryInPast(uint64 expiresAt);
    /// @notice The patient has no active grant for this provider.
    /// @param patient The patient key.
    /// @param provider The provider.
    error NoActiveGrant(uint128 patient, address provider);
    /// @notice The root is anchored already.
    /// @param root The root.
    error RootExists(bytes32 root);
    /// @notice A root must not be zero.
    error ZeroRoot();
    /// @notice A root holds 1 to `MAX_BATCH` records.
    /// @param count The count given.
    /// @param max `MAX_BATCH`.
    error BadBatchSize(uint32 count, uint32 max);
    /// @notice An access transaction needs at least one record.
    error EmptyBatch();
    /// @notice Too many records in one access transaction.
    /// @param size Records given.
    /// @param max `MAX_ACCESS_BATCH`.
    error BatchTooLarge(uint256 size, uint256 max);
    /// @notice The voucher was not signed by the records office for this account, address and deployment.
    error InvalidVoucher();
    /// @notice The voucher's deadline has passed.
    /// @param deadline The deadline, unix seconds.
    error VoucherExpired(uint64 deadline);
    /// @notice The reason is not one of the coded emergency reasons (1 to `MAX_EMERGENCY_REASON`).
    /// @param reason The code given.
    error UnknownEmergencyReason(uint8 reason);
    /// @notice The provider used every emergency opening for this patient in the last 24 hours.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param nextAt When the next opening is allowed, unix seconds.
    error EmergencyLimitReached(uint128 patient, address provider, uint64 nextAt);
    /// @notice The provider has no open emergency access to this patient.
    /// @param patient The patient key.
    /// @param provider The provider.
    error NoOpenEmergency(uint128 patient, address provider);

    /// @notice The kind is not one of the coded device kinds (1 to `MAX_DEVICE_KIND`).
    /// @param kind The code given.
    error UnknownDeviceKind(uint8 kind);
    /// @notice The device key is registered already (to this or another patient, or revoked).
    /// @param device The device key's address.
    error DeviceTaken(address device);
    /// @notice The device is not an active device of this patient.
    /// @param device The device key's address.
    /// @param patient The patient key.
    error NotActiveDevice(address device, uint128 patient);

    // ---------------------------------------------------------------- modifiers

    modifier onlyManager() {
        if (msg.sender != manager) revert NotManager(msg.sender);
        _;
    }

    modifier onlyVerifiedProvider() {
        if (providers[msg.sender].status != ProviderStatus.Verified) revert ProviderNotVerified(msg.sender);
        _;
    }

    /// @param manager_ The records office ("EHR manager").
    constructor(address manager_) {
        if (manager_ == address(0)) revert ZeroAddress();
        manager = manager_;
        deploymentId = keccak256(
            abi.encode(
                block.chainid,
                address(this),
                block.number,
                block.timestamp,
                blockhash(block.number - 1),
                block.prevrandao
            )
        );
        // The deployment id is the domain's salt: a voucher for one deployment is void on a
        // redeployment at the same address.
        domainSeparator = keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract,bytes32 salt)"
                ),
                keccak256("EhrAccess"),
                keccak256("5"),
                block.chainid,
                address(this),
                deploymentId
            )
        );
        emit ManagerTransferred(address(0), manager_);
    }

    // ---------------------------------------------------------------- records office

    /// Starts a two-step transfer of the records office role, so a typo cannot lose it.
    /// @param nominee The account that may accept the role.
    function transferManager(address nominee) external onlyManager {
        if (nominee == address(0)) revert ZeroAddress();
        pendingManager = nominee;
        emit ManagerTransferStarted(msg.sender, nominee);
    }

    /// Completes the transfer; called by the nominee.
    function acceptManager() external {
        if (msg.sender != pendingManager) revert NotPendingManager(msg.sender);
        emit ManagerTransferred(manager, msg.sender);
        manager = msg.sender;
        delete pendingManager;
    }

    /// @notice Records office: verifies a registered provider.
    /// @param provider The provider.
    function verifyProvider(address provider) external onlyManager {
        Provider storage p = providers[provider];
        if (p.status == ProviderStatus.None) revert UnknownProvider(provider);
        if (p.status == ProviderStatus.Verified) revert ProviderAlreadyVerified(provider);
        p.status = ProviderStatus.Verified;
        emit ProviderVerified(provider, msg.sender);
    }

    /// @notice Records office: suspends a pending or verified provider.
    /// @param provider The provider.
    function suspendProvider(address provider) external onlyManager {
        Provider storage p = providers[provider];
        if (p.status != ProviderStatus.Verified && p.status != ProviderStatus.Pending) {
            revert ProviderNotActive(provider);
        }
        p.status = ProviderStatus.Suspended;
        emit ProviderSuspended(provider, msg.sender);
    }

    // ---------------------------------------------------------------- registration

    /// Records office: issues `Addr {aid, pid}` to `account` (the patient was identified in person).
    /// @param aid Area id.
    /// @param pid Patient id.
    /// @param account The patient's account.
    function issuePatient(uint64 aid, uint64 pid, address account) external onlyManager {
        if (providers[account].status != ProviderStatus.None) revert AccountHasRole(account);
        _registerPatient(aid, pid, account);
    }

    /// The patient claims `Addr {aid, pid}` with a voucher the records office signed for exactly
    /// this account (EIP-712 `PatientVoucher`), so nobody can squat an address they were not issued.
    /// @param aid Area id.
    /// @param pid Patient id.
    /// @param deadline The voucher's deadline, unix seconds.
    /// @param r The `r` of the records office's EIP-712 signature of the voucher.
    /// @param vs Its `s` with the parity of `v` in the top bit (EIP-2098 compact form: 64 bytes
    ///        of calldata instead of a 65-byte `bytes`, and no malleable twin).
    function registerPatient(uint64 aid, uint64 pid, uint64 deadline, bytes32 r, bytes32 vs) external {
        if (block.timestamp > deadline) revert VoucherExpired(deadline);
        bytes32 digest = keccak256(
            abi.encodePacked(
                "\x19\x01",
                domainSeparator,
                keccak256(abi.encode(PATIENT_VOUCHER_TYPEHASH, aid, pid, msg.sender, deadline))
            )
        );
        if (_recover(digest, r, vs) != manager) revert InvalidVoucher();
        // No provider check here (it would cost a cold read on top of the signature check):
        // the records office checks the account before it signs a voucher for it, and does not
        // verify a provider account that holds a patient address.
        _registerPatient(aid, pid, msg.sender);
    }

    /// Registers the caller as a provider, pending verification by the records office. An
    /// account holding a patient address is not refused here (no reverse map is stored to
    /// find it); the records office sees it in the index and does not verify it.
    function registerProvider() external {
        // A device key never becomes a reader.
        if (providers[msg.sender].status != ProviderStatus.None || devices[msg.sender].patient != 0) {
            revert AccountHasRole(msg.sender);
        }
        providers[msg.sender] = Provider(ProviderStatus.Pending, 0, uint64(block.timestamp));
        emit ProviderRegistered(msg.sender);
    }

    /// The records office allows (or stops) an ingestion service: an account that seals
    /// devices' signed readings into records of patients with an active device.
    /// @param ingestor The service's account.
    /// @param allowed Whether it may.
    function setIngestor(address ingestor, bool allowed) external onlyManager {
        if (ingestor == address(0)) revert ZeroAddress();
        ingestors[ingestor] = allowed;
        emit IngestorSet(ingestor, allowed);
    }

    // ---------------------------------------------------------------- devices

    /// The patient registers a device key: from now on readings it signs for this patient are
    /// taken by ingestors. A device can only write: it is refused as a provider, and share
    /// nodes never release shares to it.
    /// @param patient The caller's patient key.
    /// @param device The device key's address.
    /// @param kind Device kind, 1 to `MAX_DEVICE_KIND`.
    /// @param label A short label (UTF-8, zero-padded), e.g. "wrist, left"; public, so no PHI.
    function addDevice(uint128 patient, address device, uint8 kind, bytes32 label) external {
        _asPatient(patient);
        if (device == address(0)) revert ZeroAddress();
        if (kind == 0 || kind > MAX_DEVICE_KIND) revert UnknownDeviceKind(kind);
        if (devices[device].patient != 0) revert DeviceTaken(device);
        if (providers[device].status != ProviderStatus.None || device == manager) revert AccountHasRole(device);
        devices[device] = Device(patient, kind, uint40(block.timestamp), 0);
        unchecked {
            ++activeDevices[patient]; // at most one per address: cannot overflow in practice
        }
        emit DeviceAdded(patient, device, kind, label);
    }

    /// The patient revokes a device; its readings are refused from the next request on.
    /// @param patient The caller's patient key.
    /// @param device The device key's address.
    function revokeDevice(uint128 patient, address device) external {
        _asPatient(patient);
        Device storage d = devices[device];
        if (d.patient != patient || d.revokedAt != 0) revert NotActiveDevice(device, patient);
        d.revokedAt = uint40(block.timestamp);
        unchecked {
            --activeDevices[patient]; // the device was active: the count is at least one
        }
        emit DeviceRevoked(patient, device);
    }

    /// Whether `device` is an active device of `patient` now.
    /// @param device The device key's address.
    /// @param patient The patient key.
    /// @return Whether its readings for `patient` may be taken.
    function isActiveDevice(address device, uint128 patient) external view returns (bool) {
        Device storage d = devices[device];
        return patient != 0 && d.patient == patient && d.revokedAt == 0;
    }

    /// Whether `ingestor` may add records for `patient` now: a verified ingestion service, and
    /// the patient has at least one active device.
    /// @param ingestor The account.
    /// @param patient The patient key.
    /// @return Whether share nodes take its deposits for `patient`.
    function mayIngest(address ingestor, uint128 patient) external view returns (bool) {
        return ingestors[ingestor] && activeDevices[patient] != 0;
    }

    // ---------------------------------------------------------------- grants and requests

    /// The patient grants `provider` access until `expiresAt` (unix seconds; 0 = open-ended),
    /// replacing any earlier grant; a pending request from the provider is settled by it (the
    /// index pairs them). An open emergency stays open.
    /// @param patient The caller's patient key.
    /// @param provider The provider (checked when it reads, not here: an unverified account
    ///        can never read).
    /// @param expiresAt Unix seconds; 0 for open-ended.
    function grant(uint128 patient, address provider, uint64 expiresAt) external {
        _asPatient(patient);
        if (provider == address(0)) revert ZeroAddress();
        uint64 expiry = expiresAt == 0 || expiresAt >= OPEN_ENDED_STORED ? OPEN_ENDED : expiresAt;
        if (expiry <= block.timestamp) revert ExpiryInPast(expiresAt);
        Grant storage g = grantOf[msg.sender][provider];
        g.expiresAt = expiry == OPEN_ENDED ? OPEN_ENDED_STORED : uint40(expiry);
        g.sinceBlock = uint48(block.number);
        g.patient = patient;
        emit GrantIssued(patient, provider, expiry);
    }

    /// The patient revokes a provider's active grant; an open emergency access ends with it.
    /// Only the caller's own grants are reachable (they are keyed by its account), so a caller
    /// naming another patient's key finds no active grant.
    /// @param patient The caller's patient key.
    /// @param provider The provider.
    function revoke(uint128 patient, address provider) external {
        Grant storage g = grantOf[msg.sender][provider];
        // `grant` checked that the key it stored is the caller's: matching it proves the key
        // named here is the caller's too, without reading `patientAccount` again.
        if (!_active(g) || g.patient != patient) revert NoActiveGrant(patient, provider);
        bool emergencyOpen = g.emergencyUntil > block.timestamp;
        delete grantOf[msg.sender][provider];
        emit GrantRevoked(patient, provider);
        if (emergencyOpen) emit BreakGlassEnded(patient, provider, msg.sender);
    }

    /// A verified provider asks a patient for access. Nothing is stored: the event is the
    /// request, settled in the index by the patient's grant or decline.
    /// @param patient The patient key.
    function requestAccess(uint128 patient) external onlyVerifiedProvider {
        _knownPatient(patient);
        emit AccessRequested(patient, msg.sender);
    }

    /// The patient declines a provider's request.
    /// @param patient The caller's patient key.
    /// @param provider The provider who asked.
    function declineRequest(uint128 patient, address provider) external {
        _asPatient(patient);
        emit RequestDeclined(patient, provider);
    }

    // ---------------------------------------------------------------- records and access

    /// The id of the record `author` creates for `patient` with `salt`: bound to its uploader, so a
    /// copied anchoring transaction (from the mempool, or an old chain) yields another id.
    /// @param author The account that anchors the record.
    /// @param patient The patient key.
    /// @param salt A random value chosen by the author.
    /// @return The record id.
    function recordIdOf(address author, uint128 patient, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(author, patient, salt));
    }

    /// The leaf of a record in an anchored tree: the record's id, patient, author and keyed
    /// digest, hashed twice so that no inner node of a tree can pass for a leaf.
    /// @param recordId `recordIdOf(author, patient, salt)`.
    /// @param patient The patient key.
    /// @param author The uploader.
    /// @param digest The record's keyed digest.
    /// @return The leaf.
    function leafOf(bytes32 recordId, uint128 patient, address author, bytes32 digest) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(recordId, patient, author, digest))));
    }

    /// Whether `leaf` is under `root` by `proof` (sibling hashes, each pair hashed in sorted
    /// order, so no left/right flags are needed).
    /// @param leaf The leaf.
    /// @param proof Sibling hashes from the leaf up.
    /// @param root The root.
    /// @return Whether the proof holds.
    function verifyProof(bytes32 leaf, bytes32[] calldata proof, bytes32 root) public pure returns (bool) {
        bytes32 h = leaf;
        for (uint256 i; i < proof.length; ++i) {
            bytes32 p = proof[i];
            h = h < p ? keccak256(abi.encode(h, p)) : keccak256(abi.encode(p, h));
        }
        return h == root;
    }

    /// Anchors a Merkle root of `count` records (one record: its leaf, count 1). Anyone may
    /// anchor: a root names no patient and opens nothing by itself. Share nodes accept a
    /// record's shares only from its uploader (signed), only when the uploader is the patient
    /// or has access to the patient, and release them only with the record's proof to an
    /// anchored root.
    /// @param root The root.
    /// @param count Records under it (1 to `MAX_BATCH`).
    function anchor(bytes32 root, uint32 count) external {
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0 || count > MAX_BATCH) revert BadBatchSize(count, MAX_BATCH);
        if (roots[root].anchoredAt != 0) revert RootExists(root);
        roots[root] = Root(msg.sender, uint64(block.timestamp), count);
        emit Anchored(root, msg.sender, count);
    }

    /// The id of the record a proof describes, and whether it is under an anchored root.
    /// @param r The record's proof.
    /// @return recordId `recordIdOf(r.author, r.patient, r.salt)`.
    /// @return anchored Whether the proof leads to an anchored root.
    function isAnchored(RecordProof calldata r) public view returns (bytes32 recordId, bool anchored) {
        recordId = recordIdOf(r.author, r.patient, r.salt);
        anchored = roots[r.root].anchoredAt != 0
            && verifyProof(leafOf(recordId, r.patient, r.author, r.digest), r.proof, r.root);
    }

    /// The access transaction that precedes reading records of one patient. Nothing is
    /// stored: share nodes find the `AccessAllowed` event in this transaction's receipt and ask
    /// `canRead` with its block and time. A verified (or suspended) provider's denials are
    /// logged, not reverted, so that every refused attempt stays on the audit trail. Accounts
    /// the records office never verified revert instead: anyone can create them, and their
    /// events would let a stranger flood a patient's audit trail.
    /// @param patient The patient key whose records are read.
    /// @param ids The records to read (1 to `MAX_ACCESS_BATCH`). They are not looked up (that
    ///        would cost a slot read each): share nodes release a record only to an event
    ///        naming the record's own patient, so naming another patient's record opens nothing.
    function access(uint128 patient, bytes32[] calldata ids) external {
        uint256 n = ids.length;
        if (n == 0) revert EmptyBatch();
        if (n > MAX_ACCESS_BATCH) revert BatchTooLarge(n, MAX_ACCESS_BATCH);
        Provider storage p = providers[msg.sender];
        // Suspended providers revert too: suspension is the office's lever against a provider
        // who floods patients' trails with denied attempts.
        if (p.status != ProviderStatus.Verified) revert ProviderNotVerified(msg.sender);
        _knownPatient(patient);
        (DenyReason reason, bool emergency) = _check(patient, msg.sender);
        uint32 denied;
        uint32 base = p.deniedCount;
        for (uint256 i; i < n; ++i) {
            bytes32 id = ids[i];
            if (reason == DenyReason.None) {
                emit AccessAllowed(patient, msg.sender, id, emergency);
            } else {
                unchecked {
                    ++denied;
                }
                emit AccessDenied(patient, msg.sender, id, reason, base + denied);
            }
        }
        // One write for the whole batch.
        if (denied != 0) p.deniedCount = base + denied;
    }

    /// Opens emergency access to a patient for `BREAK_GLASS_DURATION` with a coded reason (HL7 v3
    /// PurposeOfUse, see `MAX_EMERGENCY_REASON`), at most `MAX_EMERGENCIES_PER_DAY` times in any
    /// 24 hours per patient (a sliding window over the last three openings). Policy: neither an
    /// explicit revoke nor the patient ending the last emergency forbids emergency access (HIPAA
    /// requires it to stay possible); the index flags such an opening as overriding the revoke
    /// so that the patient and the records office see it, and the patient can end it at once.
    /// @param patient The patient key.
    /// @param reason HL7 v3 PurposeOfUse code, 1 ETREAT .. 5 THREAT.
    function breakGlass(uint128 patient, uint8 reason) external onlyVerifiedProvider {
        if (reason == 0 || reason > MAX_EMERGENCY_REASON) revert UnknownEmergencyReason(reason);
        address account = _knownPatient(patient);
        Openings storage o = openings[patient][msg.sender];
        uint48 t = uint48(block.timestamp);
        uint48[3] memory opened = [o.opened0, o.opened1, o.opened2];
        uint256 recent;
        uint256 oldest;
        for (uint256 i; i < 3; ++i) {
            if (opened[i] != 0 && opened[i] + 1 days > t) ++recent;
            if (opened[i] < opened[oldest]) oldest = i;
        }
        if (recent >= MAX_EMERGENCIES_PER_DAY) {
            revert EmergencyLimitReached(patient, msg.sender, uint64(opened[oldest]) + 1 days);
        }
        opened[oldest] = t;
        openings[patient][msg.sender] = Openings(opened[0], opened[1], opened[2]);
        Grant storage g = grantOf[account][msg.sender];
        uint40 until = uint40(t) + uint40(BREAK_GLASS_DURATION);
        if (g.patient != patient) {
            // Another key of the same account (the office issues one per account): the old
            // grant does not carry over to this patient.
            g.expiresAt = 0;
            g.patient = patient;
        }
        g.emergencyUntil = until;
        g.sinceBlock = uint48(block.number);
        emit BreakGlassOpened(patient, msg.sender, reason, until);
    }

    /// The patient ends a provider's open emergency access now.
    /// @param patient The caller's patient key.
    /// @param provider The provider whose emergency access ends.
    function endEmergency(uint128 patient, address provider) external {
        _asPatient(patient);
        Grant storage g = grantOf[msg.sender][provider];
        if (g.patient != patient || g.emergencyUntil <= block.timestamp) revert NoOpenEmergency(patient, provider);
        g.emergencyUntil = 0;
        emit BreakGlassEnded(patient, provider, msg.sender);
    }

    // ---------------------------------------------------------------- views

    /// When `provider`'s emergency access to `patient` ends; 0 when none is open.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @return Unix seconds, or 0.
    function emergencyUntil(uint128 patient, address provider) external view returns (uint64) {
        Grant storage g = grantOf[patientAccount[patient]][provider];
        return g.patient == patient && g.emergencyUntil > block.timestamp ? g.emergencyUntil : 0;
    }

    /// The grant and emergency `provider` holds from `patient`, as stored.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @return The grant (all zero when none).
    function grants(uint128 patient, address provider) external view returns (Grant memory) {
        return grantOf[patientAccount[patient]][provider];
    }

    /// @notice The patient key of `Addr {aid, pid}`: `aid << 64 | pid`.
    /// @param aid Area id.
    /// @param pid Patient id.
    /// @return The key.
    function patientKey(uint64 aid, uint64 pid) public pure returns (uint128) {
        return (uint128(aid) << 64) | uint128(pid);
    }

    /// Whether `provider` may read `patient`'s records now, and why not.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @return reason `DenyReason.None` when allowed.
    /// @return emergency Allowed through break-glass.
    function checkAccess(uint128 patient, address provider) external view returns (DenyReason reason, bool emergency) {
        return _check(patient, provider);
    }

    /// What share nodes ask before releasing a share of the record `r` proves: the record is
    /// under an anchored root, and the requester is its patient, or a provider with access right
    /// now whose access transaction for this record under its patient (found by the share node
    /// in the receipt: block `accessBlock`, time `accessTime`) is inside `ACCESS_WINDOW` and came
    /// in a block after the latest grant or emergency opening, not during a revoked earlier one.
    /// @param requester Who asks for shares.
    /// @param r The record's proof, as the share node keeps it.
    /// @param accessBlock Block of the requester's `AccessAllowed` event for the record (0: none).
    /// @param accessTime Time of that block, unix seconds (0: none).
    /// @return Whether shares may be released to the requester now.
    function canRead(address requester, RecordProof calldata r, uint64 accessBlock, uint64 accessTime)
        external
        view
        returns (bool)
    {
        (, bool anchored) = isAnchored(r);
        if (!anchored) return false;
        address account = patientAccount[r.patient];
        if (account != address(0) && account == requester) return true;
        (DenyReason reason,) = _check(r.patient, requester);
        if (reason != DenyReason.None) return false;
        if (accessTime == 0 || accessTime > block.timestamp || block.timestamp > accessTime + ACCESS_WINDOW) {
            return false;
        }
        // Blocks, not seconds (several blocks share a timestamp), and strictly after: within
        // the block of a grant or opening, an access may have come before it (a contract
        // cannot see transaction order), so only accesses of later blocks count.
        return accessBlock > grantOf[account][requester].sinceBlock;
    }

    // ---------------------------------------------------------------- internals

    /// Why `provider` may not read `key`'s records now (`None`: it may), and whether it may
    /// only through an open emergency. A revoked grant is gone from storage, so it reads as
    /// `NoGrant`; the events tell a revoke apart.
    function _check(uint128 key, address provider) private view returns (DenyReason, bool) {
        ProviderStatus s = providers[provider].status;
        if (s == ProviderStatus.None) return (DenyReason.NotProvider, false);
        if (s == ProviderStatus.Pending) return (DenyReason.UnverifiedProvider, false);
        if (s == ProviderStatus.Suspended) return (DenyReason.SuspendedProvider, false);
        Grant storage g = grantOf[patientAccount[key]][provider];
        if (g.patient != key) return (DenyReason.NoGrant, false);
        if (_active(g)) return (DenyReason.None, false);
        if (g.emergencyUntil > block.timestamp) return (DenyReason.None, true);
        if (g.expiresAt == 0) return (DenyReason.NoGrant, false);
        return (DenyReason.Expired, false);
    }

    function _active(Grant storage g) private view returns (bool) {
        return block.timestamp < g.expiresAt;
    }

    function _registerPatient(uint64 aid, uint64 pid, address account) private {
        if (account == address(0)) revert ZeroAddress();
        if (aid == 0 || pid == 0) revert InvalidPatientAddr(aid, pid);
        uint128 key = patientKey(aid, pid);
        if (patientAccount[key] != address(0)) revert PatientAddrTaken(aid, pid);
        patientAccount[key] = account;
        emit PatientRegistered(key, account, aid, pid);
    }

    /// The signer of an EIP-712 digest from an EIP-2098 compact signature; zero for a
    /// malformed or malleable (high-s) one.
    function _recover(bytes32 digest, bytes32 r, bytes32 vs) private pure returns (address) {
        bytes32 s = vs & bytes32(0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff);
        uint8 v = uint8((uint256(vs) >> 255) + 27);
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) return address(0);
        return ecrecover(digest, v, r, s);
    }

    /// Reverts unless the caller is `patient`'s account.
    function _asPatient(uint128 patient) private view {
        if (patient == 0 || patientAccount[patient] != msg.sender) revert NotPatient(msg.sender, patient);
    }

    /// The account of a registered patient; reverts for an unknown key.
    function _knownPatient(uint128 patient) private view returns (address account) {
        account = patientAccount[patient];
        if (account == address(0)) revert UnknownPatient(uint64(patient >> 64), uint64(patient));
    }
}
