// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {EhrAccess} from "../src/EhrAccess.sol";

/// @notice Unit and fuzz tests of every function and revert of EhrAccess. The invariants live in
///         EhrAccess.invariant.t.sol; the Rust end-to-end tests drive the same contract on anvil.
contract EhrAccessTest is Test {
    EhrAccess internal c;
    uint256 internal constant OFFICE_PK = 0xA11CE;
    address internal office;
    address internal patient = address(0xB0B);
    address internal doctor = address(0xD0C);
    address internal stranger = address(0x5);
    uint64 internal constant AID = 7;
    uint64 internal constant PID = 1001;
    uint128 internal key;
    /// Block and time of each provider's latest allowed access transaction, as a share node
    /// reads them from its receipt.
    mapping(address => uint64[2]) internal accessedAt;

    function setUp() public {
        vm.warp(1_750_000_000);
        vm.roll(100);
        office = vm.addr(OFFICE_PK);
        c = new EhrAccess(office);
        key = c.patientKey(AID, PID);
        vm.prank(office);
        c.issuePatient(AID, PID, patient);
        vm.prank(doctor);
        c.registerProvider();
        vm.prank(office);
        c.verifyProvider(doctor);
    }

    // ------------------------------------------------------------ helpers

    function _grant(uint64 expiresAt) internal {
        vm.prank(patient);
        c.grant(key, doctor, expiresAt);
    }

    /// Each anchored record's proof, as share nodes keep it.
    mapping(bytes32 => EhrAccess.RecordProof) internal proofs;

    /// Anchors a record of our patient by `author`, alone (its leaf is the root).
    function _anchor(address author, bytes32 salt) internal returns (bytes32 id) {
        id = _anchorFor(author, key, salt);
    }

    function _anchorFor(address author, uint128 patientKey_, bytes32 salt) internal returns (bytes32 id) {
        id = c.recordIdOf(author, patientKey_, salt);
        bytes32 digest = keccak256(abi.encode(salt));
        bytes32 leaf = c.leafOf(id, patientKey_, author, digest);
        vm.prank(author);
        c.anchor(leaf, 1);
        EhrAccess.RecordProof storage p = proofs[id];
        (p.patient, p.author, p.salt, p.digest, p.root) = (patientKey_, author, salt, digest, leaf);
    }

    /// An access transaction; when it is allowed, remembers its block and time as a share
    /// node would find them in the receipt of its `AccessAllowed` event.
    function _access(address who, bytes32 id) internal {
        bytes32[] memory ids = new bytes32[](1);
        ids[0] = id;
        (EhrAccess.DenyReason r,) = c.checkAccess(key, who);
        vm.prank(who);
        c.access(key, ids);
        if (r == EhrAccess.DenyReason.None) accessedAt[who] = [uint64(block.number), uint64(block.timestamp)];
    }

    /// What a share node asks for `who` with its latest allowed access transaction.
    function _canRead(address who, bytes32 id) internal view returns (bool) {
        return c.canRead(who, proofs[id], accessedAt[who][0], accessedAt[who][1]);
    }

    function _voucher(uint64 aid, uint64 pid, address account, uint64 deadline, uint256 pk)
        internal
        view
        returns (bytes memory)
    {
        bytes32 digest = keccak256(
            abi.encodePacked(
                "\x19\x01",
                c.domainSeparator(),
                keccak256(abi.encode(c.PATIENT_VOUCHER_TYPEHASH(), aid, pid, account, deadline))
            )
        );
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    /// Calls `registerPatient` on `on` with a 65-byte signature turned into the EIP-2098 form
    /// (a signature of another length is sent as zeros).
    function _register(EhrAccess on, uint64 aid, uint64 pid, uint64 deadline, bytes memory sig) internal {
        bytes32 r;
        bytes32 s_;
        uint8 v;
        if (sig.length == 65) {
            assembly {
                r := mload(add(sig, 32))
                s_ := mload(add(sig, 64))
                v := byte(0, mload(add(sig, 96)))
            }
        }
        bytes32 vs = (v == 28 || v == 1) ? s_ | bytes32(uint256(1) << 255) : s_;
        on.registerPatient(aid, pid, deadline, r, vs);
    }

    function _status(address p) internal view returns (EhrAccess.ProviderStatus s) {
        (s,,) = c.providers(p);
    }

    function _denied(address p) internal view returns (uint32 d) {
        (, d,) = c.providers(p);
    }

    // ------------------------------------------------------------ deployment and office

    function test_constructor_refuses_no_manager_and_sets_a_unique_deployment() public {
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        new EhrAccess(address(0));
        EhrAccess other = new EhrAccess(office);
        assertTrue(other.deploymentId() != c.deploymentId(), "two deployments share an id");
        assertTrue(other.domainSeparator() != c.domainSeparator(), "two deployments share a domain");
        assertEq(c.manager(), office, "manager");
    }

    function test_manager_transfer_takes_two_steps() public {
        address next = address(0x0FF1CE);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotManager.selector, stranger));
        vm.prank(stranger);
        c.transferManager(next);
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        vm.prank(office);
        c.transferManager(address(0));
        vm.prank(office);
        c.transferManager(next);
        assertEq(c.manager(), office, "not moved before acceptance");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPendingManager.selector, stranger));
        vm.prank(stranger);
        c.acceptManager();
        vm.prank(next);
        c.acceptManager();
        assertEq(c.manager(), next, "moved");
        assertEq(c.pendingManager(), address(0), "nominee cleared");
    }

    function test_providers_are_verified_and_suspended_by_the_office_only() public {
        address p = address(0xAAA);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownProvider.selector, p));
        vm.prank(office);
        c.verifyProvider(p);
        vm.prank(p);
        c.registerProvider();
        assertTrue(_status(p) == EhrAccess.ProviderStatus.Pending, "pending");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotManager.selector, p));
        vm.prank(p);
        c.verifyProvider(p);
        vm.prank(office);
        c.verifyProvider(p);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderAlreadyVerified.selector, p));
        vm.prank(office);
        c.verifyProvider(p);
        vm.prank(office);
        c.suspendProvider(p);
        assertTrue(_status(p) == EhrAccess.ProviderStatus.Suspended, "suspended");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotActive.selector, p));
        vm.prank(office);
        c.suspendProvider(p);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotManager.selector, stranger));
        vm.prank(stranger);
        c.suspendProvider(doctor);
        // A suspended provider can be verified again.
        vm.prank(office);
        c.verifyProvider(p);
    }

    // ------------------------------------------------------------ registration

    function test_patient_addresses_are_issued_once_to_one_account() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotManager.selector, stranger));
        vm.prank(stranger);
        c.issuePatient(1, 2, stranger);
        vm.startPrank(office);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.InvalidPatientAddr.selector, 0, 2));
        c.issuePatient(0, 2, stranger);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.InvalidPatientAddr.selector, 1, 0));
        c.issuePatient(1, 0, stranger);
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        c.issuePatient(1, 2, address(0));
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PatientAddrTaken.selector, AID, PID));
        c.issuePatient(AID, PID, stranger);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, doctor));
        c.issuePatient(1, 2, doctor);
        vm.stopPrank();
        assertEq(c.patientAccount(key), patient, "account of the Addr");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, doctor));
        vm.prank(doctor);
        c.registerProvider();
    }

    function testFuzz_vouchers_work_once_for_their_account_until_their_deadline(
        uint64 aid,
        uint64 pid,
        uint64 ahead,
        uint256 otherPk
    ) public {
        vm.assume(aid != 0 && pid != 0 && !(aid == AID && pid == PID));
        otherPk = bound(otherPk, 1, 2 ** 128);
        vm.assume(otherPk != OFFICE_PK);
        address account = address(0xC1A1);
        uint64 deadline = uint64(block.timestamp) + uint64(bound(ahead, 0, 365 days));
        bytes memory good = _voucher(aid, pid, account, deadline, OFFICE_PK);
        // Someone else's signature, another account, a mangled signature: refused.
        bytes memory forged = _voucher(aid, pid, account, deadline, otherPk);
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(account);
        _register(c, aid, pid, deadline, forged);
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(stranger);
        _register(c, aid, pid, deadline, good);
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(account);
        _register(c, aid, pid, deadline, hex"00");
        // After the deadline: expired.
        uint256 t = block.timestamp;
        vm.warp(uint256(deadline) + 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.VoucherExpired.selector, deadline));
        vm.prank(account);
        _register(c, aid, pid, deadline, good);
        vm.warp(t);
        vm.prank(account);
        _register(c, aid, pid, deadline, good);
        assertEq(c.patientAccount(c.patientKey(aid, pid)), account, "registered");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PatientAddrTaken.selector, aid, pid));
        vm.prank(account);
        _register(c, aid, pid, deadline, good);
    }

    function test_a_voucher_of_another_deployment_is_void() public {
        EhrAccess other = new EhrAccess(office);
        address account = address(0xC1A2);
        uint64 deadline = uint64(block.timestamp + 1 days);
        bytes memory forOther;
        {
            bytes32 digest = keccak256(
                abi.encodePacked(
                    "\x19\x01",
                    other.domainSeparator(),
                    keccak256(abi.encode(c.PATIENT_VOUCHER_TYPEHASH(), uint64(3), uint64(4), account, deadline))
                )
            );
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(OFFICE_PK, digest);
            forOther = abi.encodePacked(r, s, v);
        }
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(account);
        _register(c, 3, 4, deadline, forOther);
        vm.prank(account);
        _register(other, 3, 4, deadline, forOther);
    }

    // ------------------------------------------------------------ grants and requests

    function test_grant_and_revoke() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, stranger, key));
        vm.prank(stranger);
        c.grant(key, doctor, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, patient, key + 1));
        vm.prank(patient);
        c.grant(key + 1, doctor, 0);
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        vm.prank(patient);
        c.grant(key, address(0), 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(patient);
        c.revoke(key, doctor);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.GrantIssued(key, doctor, type(uint64).max);
        _grant(0);
        (EhrAccess.DenyReason r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.None, "granted");
        EhrAccess.Grant memory g = c.grants(key, doctor);
        assertEq(uint256(g.patient), uint256(key), "stored under its patient");
        assertEq(g.sinceBlock, block.number, "from this block");
        // Nobody else reaches the grant: not the provider, not a stranger naming the key.
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(doctor);
        c.revoke(key, doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(stranger);
        c.revoke(key, doctor);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.GrantRevoked(key, doctor);
        vm.prank(patient);
        c.revoke(key, doctor);
        (r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.NoGrant, "a revoked grant is cleared");
        g = c.grants(key, doctor);
        assertEq(g.expiresAt, 0, "slot cleared (the refund keeps a revoke cheap)");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(patient);
        c.revoke(key, doctor);
    }

    function test_a_patient_naming_another_key_cannot_revoke_or_end_its_grants() public {
        address other = address(0xB0B2);
        vm.prank(office);
        c.issuePatient(8, 8, other);
        uint128 otherKey = c.patientKey(8, 8);
        _grant(0);
        vm.prank(other);
        c.grant(otherKey, doctor, 0);
        // `other` names the first patient's key: its own grant matches another key, so no.
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(other);
        c.revoke(key, doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, other, key));
        vm.prank(other);
        c.declineRequest(key, doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, other, key));
        vm.prank(other);
        c.endEmergency(key, doctor);
        (EhrAccess.DenyReason r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.None, "the first patient's grant stands");
    }

    function testFuzz_a_grant_holds_until_its_expiry_and_not_a_second_longer(uint64 ahead) public {
        uint64 now_ = uint64(block.timestamp);
        ahead = uint64(bound(ahead, 0, 10 * 365 days));
        uint64 expiresAt = now_ + ahead;
        if (ahead == 0) {
            vm.expectRevert(abi.encodeWithSelector(EhrAccess.ExpiryInPast.selector, expiresAt));
            _grant(expiresAt);
            return;
        }
        _grant(expiresAt);
        vm.warp(uint256(expiresAt) - 1);
        (EhrAccess.DenyReason r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.None, "active one second before expiry");
        vm.warp(expiresAt);
        (r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.Expired, "expired at expiry");
    }

    function test_requests_are_events_from_verified_providers_answered_by_the_patient() public {
        address pending = address(0xAB);
        vm.prank(pending);
        c.registerProvider();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, pending));
        vm.prank(pending);
        c.requestAccess(key);
        uint128 nobody = c.patientKey(9, 9);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 9, 9));
        vm.prank(doctor);
        c.requestAccess(nobody);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.AccessRequested(key, doctor);
        vm.prank(doctor);
        c.requestAccess(key);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, key));
        vm.prank(doctor);
        c.declineRequest(key, doctor);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.RequestDeclined(key, doctor);
        vm.prank(patient);
        c.declineRequest(key, doctor);
    }

    // ------------------------------------------------------------ records

    function testFuzz_a_record_id_is_bound_to_its_uploader_and_patient(bytes32 salt, address other) public {
        vm.assume(other != patient && other != address(0));
        bytes32 id = _anchor(patient, salt);
        assertEq(id, c.recordIdOf(patient, key, salt), "id derived from uploader, patient, salt");
        assertTrue(c.recordIdOf(other, key, salt) != id, "another uploader gets another id");
        (bytes32 derived, bool anchored) = c.isAnchored(proofs[id]);
        assertTrue(anchored && derived == id, "anchored under its own id");
        // The same proof claiming another author or patient leads nowhere.
        EhrAccess.RecordProof memory forged = proofs[id];
        forged.author = other;
        (, anchored) = c.isAnchored(forged);
        assertFalse(anchored, "another author");
        forged = proofs[id];
        forged.patient = key + 1;
        (, anchored) = c.isAnchored(forged);
        assertFalse(anchored, "another patient");
        forged = proofs[id];
        forged.digest = bytes32(uint256(forged.digest) ^ 1);
        (, anchored) = c.isAnchored(forged);
        assertFalse(anchored, "another digest");
    }

    function test_anyone_anchors_a_root_once_with_a_bounded_count() public {
        bytes32 root = keccak256("root");
        vm.expectRevert(EhrAccess.ZeroRoot.selector);
        vm.prank(stranger);
        c.anchor(bytes32(0), 1);
        uint32 max = c.MAX_BATCH();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.BadBatchSize.selector, 0, max));
        vm.prank(stranger);
        c.anchor(root, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.BadBatchSize.selector, max + 1, max));
        vm.prank(stranger);
        c.anchor(root, max + 1);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.Anchored(root, stranger, max);
        vm.prank(stranger);
        c.anchor(root, max);
        (address by, uint64 at, uint32 count) = c.roots(root);
        assertEq(by, stranger, "anchorer");
        assertEq(at, block.timestamp, "time");
        assertEq(count, max, "count");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.RootExists.selector, root));
        vm.prank(patient);
        c.anchor(root, 1);
    }

    /// The Merkle tree the gateway's batcher builds (sorted pairs, an odd last node carried up),
    /// built here in Solidity: every leaf's proof verifies against the anchored root, through
    /// `verifyProof`, `isAnchored` and `canRead`.
    function testFuzz_every_record_of_a_batch_proves_against_its_root(uint8 n, uint8 pick) public {
        n = uint8(bound(n, 1, 40));
        bytes32[] memory leaves = new bytes32[](n);
        EhrAccess.RecordProof[] memory ps = new EhrAccess.RecordProof[](n);
        for (uint256 i; i < n; ++i) {
            ps[i].patient = key;
            ps[i].author = i % 2 == 0 ? patient : doctor;
            ps[i].salt = bytes32(i);
            ps[i].digest = keccak256(abi.encode(i));
            leaves[i] = c.leafOf(c.recordIdOf(ps[i].author, key, ps[i].salt), key, ps[i].author, ps[i].digest);
        }
        (bytes32 root, bytes32[][] memory paths) = _tree(leaves);
        vm.prank(stranger);
        c.anchor(root, n);
        for (uint256 i; i < n; ++i) {
            ps[i].root = root;
            ps[i].proof = paths[i];
            assertTrue(c.verifyProof(leaves[i], paths[i], root), "proof");
            (, bool anchored) = c.isAnchored(ps[i]);
            assertTrue(anchored, "anchored");
            assertTrue(c.canRead(patient, ps[i], 0, 0), "the patient reads each record of the batch");
        }
        uint256 k = pick % n;
        if (paths[k].length > 0) {
            paths[k][0] = bytes32(uint256(paths[k][0]) ^ 1);
            assertFalse(c.verifyProof(leaves[k], paths[k], root), "a changed proof");
        }
        assertFalse(c.verifyProof(keccak256("stranger"), ps[k].proof, root), "a stranger's leaf");
    }

    function _tree(bytes32[] memory leaves) internal pure returns (bytes32 root, bytes32[][] memory paths) {
        uint256 n = leaves.length;
        paths = new bytes32[][](n);
        uint256[] memory depth = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            paths[i] = new bytes32[](8);
        }
        bytes32[] memory level = leaves;
        // `owner[i]`: the node of the current level above leaf i.
        uint256[] memory owner = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            owner[i] = i;
        }
        while (level.length > 1) {
            bytes32[] memory next = new bytes32[]((level.length + 1) / 2);
            for (uint256 j; j < next.length; ++j) {
                uint256 a = 2 * j;
                if (a + 1 < level.length) {
                    (bytes32 x, bytes32 y) = (level[a], level[a + 1]);
                    next[j] = x < y ? keccak256(abi.encode(x, y)) : keccak256(abi.encode(y, x));
                } else {
                    next[j] = level[a];
                }
            }
            for (uint256 i; i < n; ++i) {
                uint256 o = owner[i];
                uint256 sib = o % 2 == 0 ? o + 1 : o - 1;
                if (sib < level.length) paths[i][depth[i]++] = level[sib];
                owner[i] = o / 2;
            }
            level = next;
        }
        for (uint256 i; i < n; ++i) {
            bytes32[] memory p = paths[i];
            uint256 d = depth[i];
            assembly {
                mstore(p, d)
            }
        }
        root = level[0];
    }

    // ------------------------------------------------------------ access transactions

    function test_access_logs_allowed_and_denied_reads_and_counts_denials() public {
        bytes32 id = _anchor(patient, "r1");
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessDenied(key, doctor, id, EhrAccess.DenyReason.NoGrant, 1);
        _access(doctor, id);
        assertEq(_denied(doctor), 1, "denial counted");
        assertFalse(_canRead(doctor, id), "no grant, no read");
        _grant(0);
        assertFalse(_canRead(doctor, id), "a denied access opens nothing after a grant");
        vm.roll(block.number + 1);
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessAllowed(key, doctor, id, false);
        _access(doctor, id);
        assertTrue(_canRead(doctor, id), "granted and accessed");
        assertTrue(c.canRead(patient, proofs[id], 0, 0), "the patient reads their own");
        assertFalse(
            c.canRead(stranger, proofs[id], uint64(block.number), uint64(block.timestamp)), "a stranger does not"
        );
        assertFalse(c.canRead(doctor, proofs[id], 0, 0), "a provider needs an access transaction");
        assertFalse(
            c.canRead(doctor, proofs[id], uint64(block.number), uint64(block.timestamp + 1)),
            "an access from the future"
        );
        // The access window closes.
        vm.warp(block.timestamp + c.ACCESS_WINDOW() + 1);
        assertFalse(_canRead(doctor, id), "access window over");
    }

    function testFuzz_the_access_window_is_exact(uint64 age) public {
        bytes32 id = _anchor(patient, "w");
        _grant(0);
        vm.roll(block.number + 1);
        _access(doctor, id);
        age = uint64(bound(age, 0, 2 * c.ACCESS_WINDOW()));
        vm.warp(block.timestamp + age);
        assertTrue(_canRead(doctor, id) == (age <= c.ACCESS_WINDOW()), "open exactly ACCESS_WINDOW seconds");
    }

    function testFuzz_access_batches_are_bounded(uint8 n) public {
        n = uint8(bound(n, 0, 40));
        bytes32[] memory ids = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            ids[i] = bytes32(i + 1);
        }
        if (n == 0) {
            vm.expectRevert(EhrAccess.EmptyBatch.selector);
        } else if (n > c.MAX_ACCESS_BATCH()) {
            vm.expectRevert(abi.encodeWithSelector(EhrAccess.BatchTooLarge.selector, n, c.MAX_ACCESS_BATCH()));
        }
        vm.prank(doctor);
        c.access(key, ids);
        if (n != 0 && n <= c.MAX_ACCESS_BATCH()) assertEq(_denied(doctor), n, "each record without a grant denied");
    }

    function test_only_verified_providers_send_access_transactions_for_known_patients() public {
        bytes32[] memory ids = new bytes32[](1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, stranger));
        vm.prank(stranger);
        c.access(key, ids);
        uint128 nobody = c.patientKey(9, 9);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 9, 9));
        vm.prank(doctor);
        c.access(nobody, ids);
        vm.prank(office);
        c.suspendProvider(doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, doctor));
        vm.prank(doctor);
        c.access(key, ids);
    }

    function test_an_access_under_one_patient_does_not_open_another_patients_record() public {
        address other = address(0xB0B3);
        vm.prank(office);
        c.issuePatient(8, 9, other);
        uint128 otherKey = c.patientKey(8, 9);
        bytes32 theirs = _anchorFor(other, otherKey, "x");
        _grant(0);
        vm.roll(block.number + 1);
        // The access names our patient and their record: allowed (ids are not looked up) ...
        _access(doctor, theirs);
        // ... but `canRead` judges the record's own patient, who granted nothing.
        assertFalse(_canRead(doctor, theirs), "opened another patient's record");
    }

    function test_an_access_in_the_block_of_the_grant_counts_only_from_the_next_block() public {
        bytes32 id = _anchor(patient, "same block");
        _grant(0);
        // In the grant's own block an access may have come before the grant (a contract cannot
        // see transaction order): it does not count.
        _access(doctor, id);
        assertFalse(_canRead(doctor, id), "an access of the grant's block");
        vm.roll(block.number + 1);
        _access(doctor, id);
        assertTrue(_canRead(doctor, id), "an access of a later block");
    }

    function test_an_access_before_a_revoke_and_regrant_does_not_count() public {
        bytes32 id = _anchor(patient, "r2");
        _grant(0);
        _access(doctor, id);
        vm.prank(patient);
        c.revoke(key, doctor);
        assertFalse(_canRead(doctor, id), "revoked");
        vm.roll(block.number + 1);
        _grant(0);
        assertFalse(_canRead(doctor, id), "the old access belongs to the old grant");
        vm.roll(block.number + 1);
        _access(doctor, id);
        assertTrue(_canRead(doctor, id), "a new access counts");
    }

    // ------------------------------------------------------------ break-glass

    function test_break_glass_opens_for_an_hour_and_the_patient_can_end_it() public {
        bytes32 id = _anchor(patient, "r3");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownEmergencyReason.selector, 0));
        vm.prank(doctor);
        c.breakGlass(key, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownEmergencyReason.selector, 6));
        vm.prank(doctor);
        c.breakGlass(key, 6);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, stranger));
        vm.prank(stranger);
        c.breakGlass(key, 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoOpenEmergency.selector, key, doctor));
        vm.prank(patient);
        c.endEmergency(key, doctor);
        vm.prank(doctor);
        c.breakGlass(key, 2);
        assertEq(c.emergencyUntil(key, doctor), block.timestamp + c.BREAK_GLASS_DURATION(), "open an hour");
        vm.roll(block.number + 1);
        _access(doctor, id);
        assertTrue(_canRead(doctor, id), "emergency read");
        vm.prank(patient);
        c.endEmergency(key, doctor);
        assertEq(c.emergencyUntil(key, doctor), 0, "ended");
        assertFalse(_canRead(doctor, id), "no read after the end");
    }

    function test_a_revoke_ends_an_open_emergency() public {
        _grant(0);
        vm.prank(doctor);
        c.breakGlass(key, 1);
        vm.prank(patient);
        c.revoke(key, doctor);
        assertEq(c.emergencyUntil(key, doctor), 0, "revoke ends the emergency");
    }

    function testFuzz_at_most_three_openings_in_any_24_hours(uint32[6] memory gaps) public {
        uint256 t = block.timestamp;
        uint256[] memory opened = new uint256[](6);
        uint256 made;
        for (uint256 i; i < 6; ++i) {
            t += bound(gaps[i], 1, 20 hours);
            vm.warp(t);
            uint256 recent;
            for (uint256 j; j < made; ++j) {
                if (opened[j] + 1 days > t) ++recent;
            }
            if (recent >= 3) {
                vm.expectRevert();
                vm.prank(doctor);
                c.breakGlass(key, 1);
            } else {
                vm.prank(doctor);
                c.breakGlass(key, 1);
                opened[made++] = t;
            }
        }
    }

    // ------------------------------------------------------------ the remaining paths

    function test_the_fourth_opening_in_a_day_names_when_the_next_is_possible() public {
        uint256 first = block.timestamp;
        for (uint256 i; i < 3; ++i) {
            vm.warp(first + i * 1 hours);
            vm.prank(doctor);
            c.breakGlass(key, 1);
        }
        vm.warp(first + 5 hours);
        vm.expectRevert(
            abi.encodeWithSelector(EhrAccess.EmergencyLimitReached.selector, key, doctor, uint64(first + 1 days))
        );
        vm.prank(doctor);
        c.breakGlass(key, 1);
        vm.warp(first + 1 days);
        vm.prank(doctor);
        c.breakGlass(key, 1);
    }

    function test_a_grant_keeps_its_expiry_and_an_emergency_keeps_the_grant() public {
        assertEq(uint256(c.patientKey(AID, PID)), (uint256(AID) << 64) | PID, "patientKey = aid << 64 | pid");
        _grant(uint64(block.timestamp + 1 days));
        EhrAccess.Grant memory g = c.grants(key, doctor);
        assertEq(g.expiresAt, block.timestamp + 1 days, "expiry kept");
        vm.roll(block.number + 5);
        vm.prank(doctor);
        c.breakGlass(key, 1);
        g = c.grants(key, doctor);
        assertEq(g.expiresAt, block.timestamp + 1 days, "the emergency leaves the grant");
        assertEq(g.sinceBlock, block.number, "accesses count from the opening");
        assertEq(g.emergencyUntil, block.timestamp + c.BREAK_GLASS_DURATION(), "open an hour");
        _grant(0);
        g = c.grants(key, doctor);
        assertEq(g.expiresAt, type(uint40).max, "open-ended as stored");
        assertEq(g.emergencyUntil, block.timestamp + c.BREAK_GLASS_DURATION(), "a grant leaves the emergency");
        // Expiries past the 40-bit range are open-ended.
        _grant(type(uint64).max - 1);
        assertEq(c.grants(key, doctor).expiresAt, type(uint40).max, "far expiry open-ended");
    }

    function test_break_glass_after_a_revoke_says_so_and_lapses_after_an_hour() public {
        bytes32 id = _anchor(patient, "r4");
        _grant(0);
        vm.prank(patient);
        c.revoke(key, doctor);
        uint64 until = uint64(block.timestamp + c.BREAK_GLASS_DURATION());
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.BreakGlassOpened(key, doctor, 3, until);
        vm.prank(doctor);
        c.breakGlass(key, 3);
        vm.roll(block.number + 1);
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessAllowed(key, doctor, id, true);
        _access(doctor, id);
        assertTrue(_canRead(doctor, id), "emergency read");
        vm.warp(until);
        assertEq(c.emergencyUntil(key, doctor), 0, "lapsed after an hour");
        assertFalse(_canRead(doctor, id), "no read after the hour");
        uint128 nobody = c.patientKey(4, 4);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 4, 4));
        vm.prank(doctor);
        c.breakGlass(nobody, 1);
    }

    function test_high_s_signatures_are_refused() public {
        address account = address(0xC1A3);
        uint64 deadline = uint64(block.timestamp + 1 days);
        bytes memory sig = _voucher(5, 6, account, deadline, OFFICE_PK);
        bytes32 r;
        bytes32 s_;
        uint8 v = uint8(sig[64]);
        assembly {
            r := mload(add(sig, 32))
            s_ := mload(add(sig, 64))
        }
        // The same signature's twin (n - s, the other v) recovers the same signer; refused.
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes memory twin = abi.encodePacked(r, bytes32(n - uint256(s_)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(account);
        _register(c, 5, 6, deadline, twin);
        // The compact form of the signature itself is accepted.
        vm.prank(account);
        _register(c, 5, 6, deadline, sig);
    }

    function test_check_access_names_every_kind_of_provider() public {
        address pending = address(0xAB1);
        vm.prank(pending);
        c.registerProvider();
        (EhrAccess.DenyReason r,) = c.checkAccess(key, stranger);
        assertTrue(r == EhrAccess.DenyReason.NotProvider, "not a provider");
        (r,) = c.checkAccess(key, pending);
        assertTrue(r == EhrAccess.DenyReason.UnverifiedProvider, "unverified");
        (r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.NoGrant, "no grant");
        vm.prank(office);
        c.suspendProvider(doctor);
        (r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.SuspendedProvider, "suspended");
        EhrAccess.RecordProof memory never = proofs[_anchor(patient, "n")];
        never.root = keccak256("never anchored");
        assertFalse(c.canRead(patient, never, 0, 0), "nobody reads a record under an unanchored root");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotActive.selector, stranger));
        vm.prank(office);
        c.suspendProvider(stranger);
    }

    function test_patient_only_calls_refuse_everyone_else() public {
        vm.startPrank(doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, key));
        c.endEmergency(key, doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, key));
        c.grant(key, doctor, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, key));
        c.declineRequest(key, doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, uint128(0)));
        c.grant(0, doctor, 0);
        vm.stopPrank();
        uint64 past = uint64(block.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ExpiryInPast.selector, past));
        _grant(past);
    }

    function test_a_provider_anchoring_the_same_salt_gets_another_record() public {
        bytes32 salt = "same salt";
        bytes32 mine = _anchor(patient, salt);
        _grant(0);
        bytes32 theirs = _anchor(doctor, salt);
        assertTrue(mine != theirs, "one salt, two uploaders, two records");
        (, bool anchored) = c.isAnchored(proofs[theirs]);
        assertTrue(anchored && proofs[theirs].author == doctor, "their own authorship");
        (, anchored) = c.isAnchored(proofs[mine]);
        assertTrue(anchored && proofs[mine].author == patient, "the first record is untouched");
    }

    // ------------------------------------------------------------ devices and ingestors

    address internal watch = address(0x3A7C);
    address internal ingestor = address(0x16E5);

    function _addWatch() internal {
        vm.prank(patient);
        c.addDevice(key, watch, 1, "wrist");
    }

    function test_a_patient_adds_and_revokes_devices_and_nobody_else_can() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor, key));
        vm.prank(doctor);
        c.addDevice(key, watch, 1, "wrist");
        vm.startPrank(patient);
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        c.addDevice(key, address(0), 1, "");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownDeviceKind.selector, uint8(0)));
        c.addDevice(key, watch, 0, "");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownDeviceKind.selector, uint8(9)));
        c.addDevice(key, watch, 9, "");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, doctor));
        c.addDevice(key, doctor, 1, "");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, office));
        c.addDevice(key, office, 1, "");
        c.addDevice(key, watch, 1, "wrist");
        assertTrue(c.isActiveDevice(watch, key), "active");
        assertEq(c.activeDevices(key), 1, "one active");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.DeviceTaken.selector, watch));
        c.addDevice(key, watch, 2, "again");
        vm.stopPrank();

        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, stranger, key));
        vm.prank(stranger);
        c.revokeDevice(key, watch);
        vm.prank(patient);
        c.revokeDevice(key, watch);
        assertFalse(c.isActiveDevice(watch, key), "revoked");
        assertEq(c.activeDevices(key), 0, "none active");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotActiveDevice.selector, watch, key));
        vm.prank(patient);
        c.revokeDevice(key, watch);
        // A revoked key is never registered again, for anyone.
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.DeviceTaken.selector, watch));
        vm.prank(patient);
        c.addDevice(key, watch, 1, "wrist");
    }

    function test_a_device_of_another_patient_is_not_active_for_ours() public {
        address other = address(0x0B0B);
        vm.prank(office);
        c.issuePatient(AID, PID + 1, other);
        uint128 otherKey = c.patientKey(AID, PID + 1);
        _addWatch();
        assertFalse(c.isActiveDevice(watch, otherKey), "not theirs");
        assertFalse(c.isActiveDevice(watch, 0), "no patient zero");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotActiveDevice.selector, watch, otherKey));
        vm.prank(other);
        c.revokeDevice(otherKey, watch);
    }

    function test_a_device_key_never_becomes_a_reader() public {
        _addWatch();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, watch));
        vm.prank(watch);
        c.registerProvider();
        (EhrAccess.DenyReason reason,) = c.checkAccess(key, watch);
        assertTrue(reason == EhrAccess.DenyReason.NotProvider, "not a provider");
        bytes32 id = _anchor(patient, "a record");
        assertFalse(c.canRead(watch, proofs[id], uint64(block.number), uint64(block.timestamp)), "cannot read");
    }

    function test_ingestors_are_set_by_the_office_and_need_an_active_device() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotManager.selector, patient));
        vm.prank(patient);
        c.setIngestor(ingestor, true);
        vm.expectRevert(EhrAccess.ZeroAddress.selector);
        vm.prank(office);
        c.setIngestor(address(0), true);
        assertFalse(c.mayIngest(ingestor, key), "not an ingestor yet");
        vm.prank(office);
        c.setIngestor(ingestor, true);
        assertFalse(c.mayIngest(ingestor, key), "no active device");
        _addWatch();
        assertTrue(c.mayIngest(ingestor, key), "ingestor and an active device");
        assertFalse(c.mayIngest(stranger, key), "only verified ingestors");
        vm.prank(patient);
        c.revokeDevice(key, watch);
        assertFalse(c.mayIngest(ingestor, key), "the last device revoked");
        address ring = address(0x217E);
        vm.prank(patient);
        c.addDevice(key, ring, 2, "ring");
        vm.prank(office);
        c.setIngestor(ingestor, false);
        assertFalse(c.mayIngest(ingestor, key), "stopped by the office");
    }
}

