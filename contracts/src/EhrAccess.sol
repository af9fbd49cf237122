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
        UnknownRecord,
        NotProvider,
        UnverifiedProvider,
        SuspendedProvider,
        NoGrant,
        Revoked,
        Expired
    }

    /// One patient->provider grant; one storage slot.
    struct Grant {
        uint64 grantedAt;
        uint64 expiresAt; // type(uint64).max when open-ended
        uint64 revokedAt; // 0 while not revoked
        uint64 grantedBlock; // orders grants against access transactions within one second
    }

    /// The latest granted access transaction of a provider to a record; one storage slot.
    struct Access {
        uint64 at;
        uint64 blockNumber;
    }

    /// A provider's emergency access to one patient; one storage slot.
    struct Emergency {
        uint48 until; // end of the open emergency; ENDED_BY_PATIENT after an early end or revoke
        uint48 opened0; // the last three opening times (a sliding 24 h window)
        uint48 opened1;
        uint48 opened2;
        uint64 openedBlock; // block of the latest opening: reads must come after it
    }

    /// One provider; one storage slot.
    struct Provider {
        ProviderStatus status;
        uint32 deniedCount;
        uint64 registeredAt;
    }

    /// One record anchor; three storage slots (digest, patient, author+time).
    struct Record {
        bytes32 digest;
        uint128 patient;
        address author;
        uint64 anchoredAt;
    }

    // ---------------------------------------------------------------- constants

    /// The contract's interface version; `ehr deploy` records it, share nodes and the gateway
    /// refuse a deployment of another version.
    uint16 public constant VERSION = 2;
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
    /// How long after a granted access transaction a share node may release shares.
    uint64 public constant ACCESS_WINDOW = 30 minutes;
    /// Upper bound on records per access transaction (keeps the loop bounded).
    uint256 public constant MAX_ACCESS_BATCH = 32;
    /// Upper bound on page sizes of the list views.
    uint256 public constant MAX_PAGE = 200;

    uint64 private constant OPEN_ENDED = type(uint64).max;
    /// `Emergency.until` after the patient ended the emergency or revoked the provider.
    uint48 private constant ENDED_BY_PATIENT = 1;

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

    mapping(uint128 => address) public patientAccount;
    mapping(address => uint128) public patientOf;
    mapping(address => Provider) public providers;
    mapping(uint128 => mapping(address => Grant)) public grants;
    mapping(uint128 => address[]) private grantees;
    mapping(uint128 => mapping(address => uint64)) public requestedAt;
    mapping(uint128 => address[]) private requesters;
    mapping(uint128 => mapping(address => Emergency)) public emergencies;
    mapping(bytes32 => Record) public records;
    mapping(uint128 => bytes32[]) private recordIds;
    mapping(bytes32 => mapping(address => Access)) public lastAccess;

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
    /// @notice A record was anchored.
    /// @param patient The patient key.
    /// @param recordId `recordIdOf(author, patient, salt)`.
    /// @param author Who anchored it (the patient or a granted provider).
    /// @param digest The record's keyed digest (HMAC under a key inside its sealed block).
    event RecordAnchored(uint128 indexed patient, bytes32 indexed recordId, address indexed author, bytes32 digest);
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
    /// @param overridesRevoke Opened although the patient had revoked this provider or ended its last emergency.
    event BreakGlassOpened(
        uint128 indexed patient, address indexed provider, uint8 reason, uint64 until, bool overridesRevoke
    );
    /// @notice An emergency access ended early (the patient ended it, or revoked the provider).
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @param by The patient's account.
    event BreakGlassEnded(uint128 indexed patient, address indexed provider, address indexed by);

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
    /// @notice Only a registered patient may do this.
    /// @param caller The caller.
    error NotPatient(address caller);
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
    /// @notice The provider already asked this patient.
    /// @param patient The patient key.
    /// @param provider The provider.
    error RequestAlreadyPending(uint128 patient, address provider);
    /// @notice No request from this provider is pending.
    /// @param patient The patient key.
    /// @param provider The provider.
    error NoPendingRequest(uint128 patient, address provider);
    /// @notice The record id is anchored already.
    /// @param recordId The record id.
    error RecordExists(bytes32 recordId);
    /// @notice A record digest must not be zero.
    error ZeroDigest();
    /// @notice Only the patient or a provider with access now may add records.
    /// @param caller The caller.
    /// @param patient The patient key.
    error NotAllowedToAnchor(address caller, uint128 patient);
    /// @notice An access transaction needs at least one record.
    error EmptyBatch();
    /// @notice Too many records in one access transaction.
    /// @param size Records given.
    /// @param max `MAX_ACCESS_BATCH`.
    error BatchTooLarge(uint256 size, uint256 max);
    /// @notice A page is larger than `MAX_PAGE`.
    /// @param limit The page size asked for.
    /// @param max `MAX_PAGE`.
    error PageTooLarge(uint256 limit, uint256 max);
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
                keccak256("2"),
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
        _registerPatient(aid, pid, account);
    }

    /// The patient claims `Addr {aid, pid}` with a voucher the records office signed for exactly
    /// this account (EIP-712 `PatientVoucher`), so nobody can squat an address they were not issued.
    /// @param aid Area id.
    /// @param pid Patient id.
    /// @param deadline The voucher's deadline, unix seconds.
    /// @param officeSignature The records office's 65-byte EIP-712 signature of the voucher.
    function registerPatient(uint64 aid, uint64 pid, uint64 deadline, bytes calldata officeSignature) external {
        if (block.timestamp > deadline) revert VoucherExpired(deadline);
        bytes32 digest = keccak256(
            abi.encodePacked(
                "\x19\x01",
                domainSeparator,
                keccak256(abi.encode(PATIENT_VOUCHER_TYPEHASH, aid, pid, msg.sender, deadline))
            )
        );
        if (_recover(digest, officeSignature) != manager) revert InvalidVoucher();
        _registerPatient(aid, pid, msg.sender);
    }

    /// @notice Registers the caller as a provider, pending verification by the records office.
    function registerProvider() external {
        if (patientOf[msg.sender] != 0 || providers[msg.sender].status != ProviderStatus.None) {
            revert AccountHasRole(msg.sender);
        }
        providers[msg.sender] = Provider(ProviderStatus.Pending, 0, uint64(block.timestamp));
        emit ProviderRegistered(msg.sender);
    }

    // ---------------------------------------------------------------- grants and requests

    /// Grants `provider` access until `expiresAt` (unix seconds; 0 = open-ended). Replaces any
    /// earlier grant and settles a pending request from the same provider.
    /// @param provider The provider.
    /// @param expiresAt Unix seconds; 0 for open-ended.
    function grant(address provider, uint64 expiresAt) external {
        uint128 key = _callerPatient();
        _grant(key, provider, expiresAt);
    }

    /// @notice The patient revokes a provider's active grant (and ends its open emergency access).
    /// @param provider The provider.
    function revoke(address provider) external {
        uint128 key = _callerPatient();
        Grant storage g = grants[key][provider];
        if (!_active(g)) revert NoActiveGrant(key, provider);
        g.revokedAt = uint64(block.timestamp);
        emit GrantRevoked(key, provider);
        // A revoke also ends an emergency access that is open now.
        Emergency storage e = emergencies[key][provider];
        if (e.until > block.timestamp) {
            e.until = ENDED_BY_PATIENT;
            emit BreakGlassEnded(key, provider, msg.sender);
        }
    }

    /// @notice A verified provider asks a patient for access.
    /// @param aid Area id.
    /// @param pid Patient id.
    function requestAccess(uint64 aid, uint64 pid) external onlyVerifiedProvider {
        uint128 key = _knownPatient(aid, pid);
        if (requestedAt[key][msg.sender] != 0) revert RequestAlreadyPending(key, msg.sender);
        requestedAt[key][msg.sender] = uint64(block.timestamp);
        requesters[key].push(msg.sender);
        emit AccessRequested(key, msg.sender);
    }

    /// @notice The patient grants a pending request.
    /// @param provider The provider who asked.
    /// @param expiresAt Unix seconds; 0 for open-ended.
    function approveRequest(address provider, uint64 expiresAt) external {
        uint128 key = _callerPatient();
        if (requestedAt[key][provider] == 0) revert NoPendingRequest(key, provider);
        _grant(key, provider, expiresAt);
    }

    /// @notice The patient declines a pending request.
    /// @param provider The provider who asked.
    function declineRequest(address provider) external {
        uint128 key = _callerPatient();
        if (requestedAt[key][provider] == 0) revert NoPendingRequest(key, provider);
        delete requestedAt[key][provider];
        emit RequestDeclined(key, provider);
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

    /// Anchors a record's (keyed) digest under the id `recordIdOf(msg.sender, patient, salt)`.
    /// Only the patient, or a verified provider with access right now.
    /// @param salt The author's random salt (the id is derived from it).
    /// @param aid Area id of the patient.
    /// @param pid Patient id.
    /// @param digest The record's keyed digest.
    /// @return recordId The id the record is anchored under.
    function anchorRecord(bytes32 salt, uint64 aid, uint64 pid, bytes32 digest) external returns (bytes32 recordId) {
        uint128 key = _knownPatient(aid, pid);
        if (digest == bytes32(0)) revert ZeroDigest();
        recordId = recordIdOf(msg.sender, key, salt);
        if (records[recordId].anchoredAt != 0) revert RecordExists(recordId);
        if (patientOf[msg.sender] != key) {
            (DenyReason reason,) = _check(key, msg.sender);
            if (reason != DenyReason.None) revert NotAllowedToAnchor(msg.sender, key);
        }
        records[recordId] = Record(digest, key, msg.sender, uint64(block.timestamp));
        recordIds[key].push(recordId);
        emit RecordAnchored(key, recordId, msg.sender, digest);
    }

    /// The access transaction that precedes reading records. A verified (or suspended) provider's
    /// denials are logged, not reverted, so that every refused attempt stays on the audit trail.
    /// Accounts the records office never verified revert instead: anyone can create them, and
    /// their events would let a stranger flood a patient's audit trail.
    /// @param ids The records to read (1 to `MAX_ACCESS_BATCH`).
    function access(bytes32[] calldata ids) external {
        uint256 n = ids.length;
        if (n == 0) revert EmptyBatch();
        if (n > MAX_ACCESS_BATCH) revert BatchTooLarge(n, MAX_ACCESS_BATCH);
        Provider storage p = providers[msg.sender];
        // Suspended providers revert too: suspension is the office's lever against a provider
        // who floods patients' trails with denied attempts.
        if (p.status != ProviderStatus.Verified) revert ProviderNotVerified(msg.sender);
        uint32 denied;
        uint32 base = p.deniedCount;
        for (uint256 i; i < n; ++i) {
            bytes32 id = ids[i];
            uint128 key = records[id].patient;
            DenyReason reason;
            bool emergency;
            if (key == 0) reason = DenyReason.UnknownRecord;
            else (reason, emergency) = _check(key, msg.sender);
            if (reason == DenyReason.None) {
                lastAccess[id][msg.sender] = Access(uint64(block.timestamp), uint64(block.number));
                emit AccessAllowed(key, msg.sender, id, emergency);
            } else {
                unchecked {
                    ++denied;
                }
                emit AccessDenied(key, msg.sender, id, reason, base + denied);
            }
        }
        // One write for the whole batch.
        if (denied != 0) p.deniedCount = base + denied;
    }

    /// Opens emergency access to a patient for `BREAK_GLASS_DURATION` with a coded reason (HL7 v3
    /// PurposeOfUse, see `MAX_EMERGENCY_REASON`), at most `MAX_EMERGENCIES_PER_DAY` times in any
    /// 24 hours per patient (a sliding window over the last three openings). Policy: neither an
    /// explicit revoke nor the patient ending the last emergency forbids emergency access (HIPAA
    /// requires it to stay possible), but such an opening is flagged `overridesRevoke` so that
    /// the patient and the records office see it, and the patient can end it at once.
    /// @param aid Area id of the patient.
    /// @param pid Patient id.
    /// @param reason HL7 v3 PurposeOfUse code, 1 ETREAT .. 5 THREAT.
    function breakGlass(uint64 aid, uint64 pid, uint8 reason) external onlyVerifiedProvider {
        if (reason == 0 || reason > MAX_EMERGENCY_REASON) revert UnknownEmergencyReason(reason);
        uint128 key = _knownPatient(aid, pid);
        Emergency storage e = emergencies[key][msg.sender];
        uint48 t = uint48(block.timestamp);
        uint48[3] memory opened = [e.opened0, e.opened1, e.opened2];
        uint256 recent;
        uint256 oldest;
        for (uint256 i; i < 3; ++i) {
            if (opened[i] != 0 && opened[i] + 1 days > t) ++recent;
            if (opened[i] < opened[oldest]) oldest = i;
        }
        if (recent >= MAX_EMERGENCIES_PER_DAY) {
            revert EmergencyLimitReached(key, msg.sender, uint64(opened[oldest]) + 1 days);
        }
        opened[oldest] = t;
        bool overrides = grants[key][msg.sender].revokedAt != 0 || e.until == ENDED_BY_PATIENT;
        uint48 until = t + uint48(BREAK_GLASS_DURATION);
        emergencies[key][msg.sender] = Emergency(until, opened[0], opened[1], opened[2], uint64(block.number));
        emit BreakGlassOpened(key, msg.sender, reason, until, overrides);
    }

    /// The patient ends a provider's open emergency access now.
    /// @param provider The provider whose emergency access ends.
    function endEmergency(address provider) external {
        uint128 key = _callerPatient();
        Emergency storage e = emergencies[key][provider];
        if (e.until <= block.timestamp) revert NoOpenEmergency(key, provider);
        e.until = ENDED_BY_PATIENT;
        emit BreakGlassEnded(key, provider, msg.sender);
    }

    // ---------------------------------------------------------------- views

    /// When `provider`'s emergency access to `patient` ends; 0 when none is open.
    /// @param patient The patient key.
    /// @param provider The provider.
    /// @return Unix seconds, or 0.
    function emergencyUntil(uint128 patient, address provider) external view returns (uint64) {
        uint48 until = emergencies[patient][provider].until;
        return until > block.timestamp ? until : 0;
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

    /// What share nodes ask before releasing a share: the patient themself, or a provider with
    /// access right now and a granted access transaction for this record inside `ACCESS_WINDOW`.
    /// @param requester Who asks for shares.
    /// @param recordId The record.
    /// @return Whether shares may be released to the requester now.
    function canRead(address requester, bytes32 recordId) external view returns (bool) {
        Record storage r = records[recordId];
        if (r.anchoredAt == 0) return false;
        if (patientAccount[r.patient] == requester) return true;
        (DenyReason reason, bool emergency) = _check(r.patient, requester);
        if (reason != DenyReason.None) return false;
        Access memory a = lastAccess[recordId][requester];
        if (a.at == 0 || uint64(block.timestamp) > a.at + ACCESS_WINDOW) return false;
        // The access must belong to the current grant or emergency, not to a revoked earlier
        // one; blocks, not seconds, because several blocks can share a timestamp.
        uint64 since =
            emergency ? emergencies[r.patient][requester].openedBlock : grants[r.patient][requester].grantedBlock;
        if (a.blockNumber < since) return false;
        return true;
    }

    /// @notice How many providers the patient ever granted.
    /// @param patient The patient key.
    /// @return The count.
    function grantCount(uint128 patient) external view returns (uint256) {
        return grantees[patient].length;
    }

    /// Providers ever granted by `patient`, with their grant as it stands (active or not).
    /// @param patient The patient key.
    /// @param offset First entry.
    /// @param limit At most this many (<= `MAX_PAGE`).
    /// @return who The providers.
    /// @return what Their grants.
    function grantsPage(uint128 patient, uint256 offset, uint256 limit)
        external
        view
        returns (address[] memory who, Grant[] memory what)
    {
        address[] storage all = grantees[patient];
        uint256 n = _pageLen(all.length, offset, limit);
        who = new address[](n);
        what = new Grant[](n);
        for (uint256 i; i < n; ++i) {
            who[i] = all[offset + i];
            what[i] = grants[patient][who[i]];
        }
    }

    /// Requests ever made to `patient` with the time they were made (0 once settled).
    /// @param patient The patient key.
    /// @param offset First entry.
    /// @param limit At most this many (<= `MAX_PAGE`).
    /// @return who The providers.
    /// @return at When each asked (0 once settled).
    function requestsPage(uint128 patient, uint256 offset, uint256 limit)
        external
        view
        returns (address[] memory who, uint64[] memory at)
    {
        address[] storage all = requesters[patient];
        uint256 n = _pageLen(all.length, offset, limit);
        who = new address[](n);
        at = new uint64[](n);
        for (uint256 i; i < n; ++i) {
            who[i] = all[offset + i];
            at[i] = requestedAt[patient][who[i]];
        }
    }

    /// @notice How many records the patient has.
    /// @param patient The patient key.
    /// @return The count.
    function recordCount(uint128 patient) external view returns (uint256) {
        return recordIds[patient].length;
    }

    /// @notice The patient's record ids, oldest first; paged.
    /// @param patient The patient key.
    /// @param offset First entry.
    /// @param limit At most this many (<= `MAX_PAGE`).
    /// @return ids The record ids.
    function recordsPage(uint128 patient, uint256 offset, uint256 limit) external view returns (bytes32[] memory ids) {
        bytes32[] storage all = recordIds[patient];
        uint256 n = _pageLen(all.length, offset, limit);
        ids = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            ids[i] = all[offset + i];
        }
    }

    // ---------------------------------------------------------------- internals

    function _grant(uint128 key, address provider, uint64 expiresAt) private {
        if (providers[provider].status == ProviderStatus.None) revert UnknownProvider(provider);
        uint64 expiry = expiresAt == 0 ? OPEN_ENDED : expiresAt;
        if (expiry <= block.timestamp) revert ExpiryInPast(expiresAt);
        Grant storage g = grants[key][provider];
        if (g.grantedAt == 0) grantees[key].push(provider);
        grants[key][provider] = Grant(uint64(block.timestamp), expiry, 0, uint64(block.number));
        if (requestedAt[key][provider] != 0) delete requestedAt[key][provider];
        emit GrantIssued(key, provider, expiry);
    }

    function _check(uint128 key, address provider) private view returns (DenyReason, bool) {
        ProviderStatus s = providers[provider].status;
        if (s == ProviderStatus.None) return (DenyReason.NotProvider, false);
        if (s == ProviderStatus.Pending) return (DenyReason.UnverifiedProvider, false);
        if (s == ProviderStatus.Suspended) return (DenyReason.SuspendedProvider, false);
        Grant storage g = grants[key][provider];
        if (_active(g)) return (DenyReason.None, false);
        if (emergencies[key][provider].until > block.timestamp) return (DenyReason.None, true);
        if (g.grantedAt == 0) return (DenyReason.NoGrant, false);
        if (g.revokedAt != 0) return (DenyReason.Revoked, false);
        return (DenyReason.Expired, false);
    }

    function _active(Grant storage g) private view returns (bool) {
        return g.grantedAt != 0 && g.revokedAt == 0 && block.timestamp < g.expiresAt;
    }

    function _registerPatient(uint64 aid, uint64 pid, address account) private {
        if (account == address(0)) revert ZeroAddress();
        if (aid == 0 || pid == 0) revert InvalidPatientAddr(aid, pid);
        uint128 key = patientKey(aid, pid);
        if (patientAccount[key] != address(0)) revert PatientAddrTaken(aid, pid);
        if (patientOf[account] != 0 || providers[account].status != ProviderStatus.None) {
            revert AccountHasRole(account);
        }
        patientAccount[key] = account;
        patientOf[account] = key;
        emit PatientRegistered(key, account, aid, pid);
    }

    /// The signer of an EIP-712 digest; zero for a malformed or malleable (high-s) signature.
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) return address(0);
        return ecrecover(digest, v, r, s);
    }

    function _callerPatient() private view returns (uint128 key) {
        key = patientOf[msg.sender];
        if (key == 0) revert NotPatient(msg.sender);
    }

    function _knownPatient(uint64 aid, uint64 pid) private view returns (uint128 key) {
        key = patientKey(aid, pid);
        if (patientAccount[key] == address(0)) revert UnknownPatient(aid, pid);
    }

    function _pageLen(uint256 total, uint256 offset, uint256 limit) private pure returns (uint256) {
        if (limit > MAX_PAGE) revert PageTooLarge(limit, MAX_PAGE);
        if (offset >= total) return 0;
        uint256 left = total - offset;
        return left < limit ? left : limit;
    }
}
