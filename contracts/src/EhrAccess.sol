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

    /// How long a break-glass emergency access lasts.
    uint64 public constant BREAK_GLASS_DURATION = 1 hours;
    /// How long after a granted access transaction a share node may release shares.
    uint64 public constant ACCESS_WINDOW = 30 minutes;
    /// Upper bound on records per access transaction (keeps the loop bounded).
    uint256 public constant MAX_ACCESS_BATCH = 32;
    /// Upper bound on page sizes of the list views.
    uint256 public constant MAX_PAGE = 200;

    uint64 private constant OPEN_ENDED = type(uint64).max;

    // ---------------------------------------------------------------- storage

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
    mapping(uint128 => mapping(address => uint64)) public emergencyUntil;
    mapping(bytes32 => Record) public records;
    mapping(uint128 => bytes32[]) private recordIds;
    mapping(bytes32 => mapping(address => Access)) public lastAccess;

    // ---------------------------------------------------------------- events

    event ManagerTransferStarted(address indexed current, address indexed nominee);
    event ManagerTransferred(address indexed previous, address indexed current);
    event PatientRegistered(uint128 indexed patient, address indexed account, uint64 aid, uint64 pid);
    event ProviderRegistered(address indexed provider);
    event ProviderVerified(address indexed provider, address indexed by);
    event ProviderSuspended(address indexed provider, address indexed by);
    event AccessRequested(uint128 indexed patient, address indexed provider);
    event RequestDeclined(uint128 indexed patient, address indexed provider);
    event GrantIssued(uint128 indexed patient, address indexed provider, uint64 expiresAt);
    event GrantRevoked(uint128 indexed patient, address indexed provider);
    event RecordAnchored(uint128 indexed patient, bytes32 indexed recordId, address indexed author, bytes32 digest);
    event AccessAllowed(uint128 indexed patient, address indexed provider, bytes32 indexed recordId, bool emergency);
    event AccessDenied(
        uint128 indexed patient, address indexed provider, bytes32 indexed recordId, DenyReason reason, uint32 deniedCount
    );
    event BreakGlassOpened(uint128 indexed patient, address indexed provider, uint16 reasonCode, uint64 until);

    // ---------------------------------------------------------------- errors

    error NotManager(address caller);
    error NotPendingManager(address caller);
    error ZeroAddress();
    error InvalidPatientAddr(uint64 aid, uint64 pid);
    error PatientAddrTaken(uint64 aid, uint64 pid);
    error AccountHasRole(address account);
    error NotPatient(address caller);
    error UnknownPatient(uint64 aid, uint64 pid);
    error UnknownProvider(address provider);
    error ProviderNotVerified(address provider);
    error ProviderAlreadyVerified(address provider);
    error ProviderNotActive(address provider);
    error ExpiryInPast(uint64 expiresAt);
    error NoActiveGrant(uint128 patient, address provider);
    error RequestAlreadyPending(uint128 patient, address provider);
    error NoPendingRequest(uint128 patient, address provider);
    error RecordExists(bytes32 recordId);
    error ZeroDigest();
    error NotAllowedToAnchor(address caller, uint128 patient);
    error EmptyBatch();
    error BatchTooLarge(uint256 size, uint256 max);
    error PageTooLarge(uint256 limit, uint256 max);

    // ---------------------------------------------------------------- modifiers

    modifier onlyManager() {
        if (msg.sender != manager) revert NotManager(msg.sender);
        _;
    }

    modifier onlyVerifiedProvider() {
        if (providers[msg.sender].status != ProviderStatus.Verified) revert ProviderNotVerified(msg.sender);
        _;
    }

    constructor(address manager_) {
        if (manager_ == address(0)) revert ZeroAddress();
        manager = manager_;
        emit ManagerTransferred(address(0), manager_);
    }

    // ---------------------------------------------------------------- records office

    /// Starts a two-step transfer of the records office role, so a typo cannot lose it.
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

    function verifyProvider(address provider) external onlyManager {
        Provider storage p = providers[provider];
        if (p.status == ProviderStatus.None) revert UnknownProvider(provider);
        if (p.status == ProviderStatus.Verified) revert ProviderAlreadyVerified(provider);
        p.status = ProviderStatus.Verified;
        emit ProviderVerified(provider, msg.sender);
    }

    function suspendProvider(address provider) external onlyManager {
        Provider storage p = providers[provider];
        if (p.status != ProviderStatus.Verified && p.status != ProviderStatus.Pending) {
            revert ProviderNotActive(provider);
        }
        p.status = ProviderStatus.Suspended;
        emit ProviderSuspended(provider, msg.sender);
    }

    // ---------------------------------------------------------------- registration

    function registerPatient(uint64 aid, uint64 pid) external {
        if (aid == 0 || pid == 0) revert InvalidPatientAddr(aid, pid);
        uint128 key = patientKey(aid, pid);
        if (patientAccount[key] != address(0)) revert PatientAddrTaken(aid, pid);
        if (patientOf[msg.sender] != 0 || providers[msg.sender].status != ProviderStatus.None) {
            revert AccountHasRole(msg.sender);
        }
        patientAccount[key] = msg.sender;
        patientOf[msg.sender] = key;
        emit PatientRegistered(key, msg.sender, aid, pid);
    }

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
    function grant(address provider, uint64 expiresAt) external {
        uint128 key = _callerPatient();
        _grant(key, provider, expiresAt);
    }

    function revoke(address provider) external {
        uint128 key = _callerPatient();
        Grant storage g = grants[key][provider];
        if (!_active(g)) revert NoActiveGrant(key, provider);
        g.revokedAt = uint64(block.timestamp);
        emit GrantRevoked(key, provider);
    }

    function requestAccess(uint64 aid, uint64 pid) external onlyVerifiedProvider {
        uint128 key = _knownPatient(aid, pid);
        if (requestedAt[key][msg.sender] != 0) revert RequestAlreadyPending(key, msg.sender);
        requestedAt[key][msg.sender] = uint64(block.timestamp);
        requesters[key].push(msg.sender);
        emit AccessRequested(key, msg.sender);
    }

    function approveRequest(address provider, uint64 expiresAt) external {
        uint128 key = _callerPatient();
        if (requestedAt[key][provider] == 0) revert NoPendingRequest(key, provider);
        _grant(key, provider, expiresAt);
    }

    function declineRequest(address provider) external {
        uint128 key = _callerPatient();
        if (requestedAt[key][provider] == 0) revert NoPendingRequest(key, provider);
        delete requestedAt[key][provider];
        emit RequestDeclined(key, provider);
    }

    // ---------------------------------------------------------------- records and access

    /// Anchors a record's digest. Only the patient, or a verified provider with access right now.
    function anchorRecord(bytes32 recordId, uint64 aid, uint64 pid, bytes32 digest) external {
        uint128 key = _knownPatient(aid, pid);
        if (digest == bytes32(0)) revert ZeroDigest();
        if (records[recordId].anchoredAt != 0) revert RecordExists(recordId);
        if (patientOf[msg.sender] != key) {
            (DenyReason reason,) = _check(key, msg.sender);
            if (reason != DenyReason.None) revert NotAllowedToAnchor(msg.sender, key);
        }
        records[recordId] = Record(digest, key, msg.sender, uint64(block.timestamp));
        recordIds[key].push(recordId);
        emit RecordAnchored(key, recordId, msg.sender, digest);
    }

    /// The access transaction that precedes reading records. Denials are logged, not reverted,
    /// so that every unauthorized attempt stays on the audit trail.
    function access(bytes32[] calldata ids) external {
        uint256 n = ids.length;
        if (n == 0) revert EmptyBatch();
        if (n > MAX_ACCESS_BATCH) revert BatchTooLarge(n, MAX_ACCESS_BATCH);
        uint32 denied;
        Provider storage p = providers[msg.sender];
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
        // One write for the whole batch; only providers have a counter to bump.
        if (denied != 0 && p.status != ProviderStatus.None) p.deniedCount = base + denied;
    }

    /// Opens emergency access to a patient for `BREAK_GLASS_DURATION`, logged for the patient.
    function breakGlass(uint64 aid, uint64 pid, uint16 reasonCode) external onlyVerifiedProvider {
        uint128 key = _knownPatient(aid, pid);
        uint64 until = uint64(block.timestamp) + BREAK_GLASS_DURATION;
        emergencyUntil[key][msg.sender] = until;
        emit BreakGlassOpened(key, msg.sender, reasonCode, until);
    }

    // ---------------------------------------------------------------- views

    function patientKey(uint64 aid, uint64 pid) public pure returns (uint128) {
        return (uint128(aid) << 64) | uint128(pid);
    }

    /// Whether `provider` may read `patient`'s records now, and why not.
    function checkAccess(uint128 patient, address provider) external view returns (DenyReason reason, bool emergency) {
        return _check(patient, provider);
    }

    /// What share nodes ask before releasing a share: the patient themself, or a provider with
    /// access right now and a granted access transaction for this record inside `ACCESS_WINDOW`.
    function canRead(address requester, bytes32 recordId) external view returns (bool) {
        Record storage r = records[recordId];
        if (r.anchoredAt == 0) return false;
        if (patientAccount[r.patient] == requester) return true;
        (DenyReason reason, bool emergency) = _check(r.patient, requester);
        if (reason != DenyReason.None) return false;
        Access memory a = lastAccess[recordId][requester];
        if (a.at == 0 || uint64(block.timestamp) > a.at + ACCESS_WINDOW) return false;
        // The access must belong to the current grant (or emergency), not to a revoked earlier
        // one; blocks, not seconds, because several blocks can share a timestamp.
        if (!emergency && a.blockNumber < grants[r.patient][requester].grantedBlock) return false;
        return true;
    }

    function grantCount(uint128 patient) external view returns (uint256) {
        return grantees[patient].length;
    }

    /// Providers ever granted by `patient`, with their grant as it stands (active or not).
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

    function recordCount(uint128 patient) external view returns (uint256) {
        return recordIds[patient].length;
    }

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
        if (emergencyUntil[key][provider] > block.timestamp) return (DenyReason.None, true);
        if (g.grantedAt == 0) return (DenyReason.NoGrant, false);
        if (g.revokedAt != 0) return (DenyReason.Revoked, false);
        return (DenyReason.Expired, false);
    }

    function _active(Grant storage g) private view returns (bool) {
        return g.grantedAt != 0 && g.revokedAt == 0 && block.timestamp < g.expiresAt;
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
