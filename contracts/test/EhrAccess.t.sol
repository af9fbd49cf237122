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
        c.grant(doctor, expiresAt);
    }

    function _anchor(address author, bytes32 salt) internal returns (bytes32 id) {
        vm.prank(author);
        id = c.anchorRecord(salt, AID, PID, keccak256(abi.encode(salt)));
    }

    function _access(address who, bytes32 id) internal {
        bytes32[] memory ids = new bytes32[](1);
        ids[0] = id;
        vm.prank(who);
        c.access(ids);
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
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, patient));
        c.issuePatient(1, 2, patient);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, doctor));
        c.issuePatient(1, 2, doctor);
        vm.stopPrank();
        assertEq(c.patientAccount(key), patient, "account of the Addr");
        assertEq(c.patientOf(patient), key, "Addr of the account");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.AccountHasRole.selector, patient));
        vm.prank(patient);
        c.registerProvider();
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
        c.registerPatient(aid, pid, deadline, forged);
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(stranger);
        c.registerPatient(aid, pid, deadline, good);
        vm.expectRevert(EhrAccess.InvalidVoucher.selector);
        vm.prank(account);
        c.registerPatient(aid, pid, deadline, hex"00");
        // After the deadline: expired.
        uint256 t = block.timestamp;
        vm.warp(uint256(deadline) + 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.VoucherExpired.selector, deadline));
        vm.prank(account);
        c.registerPatient(aid, pid, deadline, good);
        vm.warp(t);
        vm.prank(account);
        c.registerPatient(aid, pid, deadline, good);
        assertEq(c.patientAccount(c.patientKey(aid, pid)), account, "registered");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PatientAddrTaken.selector, aid, pid));
        vm.prank(account);
        c.registerPatient(aid, pid, deadline, good);
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
        c.registerPatient(3, 4, deadline, forOther);
        vm.prank(account);
        other.registerPatient(3, 4, deadline, forOther);
    }

    // ------------------------------------------------------------ grants and requests

    function test_grant_and_revoke() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, stranger));
        vm.prank(stranger);
        c.grant(doctor, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownProvider.selector, stranger));
        vm.prank(patient);
        c.grant(stranger, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(patient);
        c.revoke(doctor);
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.GrantIssued(key, doctor, type(uint64).max);
        _grant(0);
        (EhrAccess.DenyReason r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.None, "granted");
        assertEq(c.grantCount(key), 1, "listed once");
        _grant(0);
        assertEq(c.grantCount(key), 1, "a renewal is not listed twice");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor));
        vm.prank(doctor);
        c.revoke(doctor);
        vm.prank(patient);
        c.revoke(doctor);
        (r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.Revoked, "revoked");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoActiveGrant.selector, key, doctor));
        vm.prank(patient);
        c.revoke(doctor);
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

    function test_requests_are_approved_or_declined_by_the_patient() public {
        address pending = address(0xAB);
        vm.prank(pending);
        c.registerProvider();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, pending));
        vm.prank(pending);
        c.requestAccess(AID, PID);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 9, 9));
        vm.prank(doctor);
        c.requestAccess(9, 9);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoPendingRequest.selector, key, doctor));
        vm.prank(patient);
        c.approveRequest(doctor, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoPendingRequest.selector, key, doctor));
        vm.prank(patient);
        c.declineRequest(doctor);
        vm.prank(doctor);
        c.requestAccess(AID, PID);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.RequestAlreadyPending.selector, key, doctor));
        vm.prank(doctor);
        c.requestAccess(AID, PID);
        vm.prank(patient);
        c.declineRequest(doctor);
        assertEq(c.requestedAt(key, doctor), 0, "declined");
        vm.prank(doctor);
        c.requestAccess(AID, PID);
        vm.prank(patient);
        c.approveRequest(doctor, 0);
        assertEq(c.requestedAt(key, doctor), 0, "approved clears the request");
        (EhrAccess.DenyReason r,) = c.checkAccess(key, doctor);
        assertTrue(r == EhrAccess.DenyReason.None, "approved grants");
        (address[] memory who, uint64[] memory at) = c.requestsPage(key, 0, 10);
        assertEq(who.length, 2, "both requests listed");
        assertEq(at[0], 0, "answered requests show no time");
    }

    // ------------------------------------------------------------ records

    function testFuzz_a_record_id_is_bound_to_its_uploader_and_patient(bytes32 salt, address other) public {
        vm.assume(other != patient && other != address(0));
        bytes32 id = _anchor(patient, salt);
        assertEq(id, c.recordIdOf(patient, key, salt), "id derived from uploader, patient, salt");
        assertTrue(c.recordIdOf(other, key, salt) != id, "another uploader gets another id");
        (, uint128 p, address author,) = c.records(id);
        assertEq(uint256(p), uint256(key), "patient");
        assertEq(author, patient, "author");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.RecordExists.selector, id));
        vm.prank(patient);
        c.anchorRecord(salt, AID, PID, bytes32(uint256(1)));
    }

    function test_anchoring_needs_the_patient_or_a_provider_with_access() public {
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 1, 1));
        vm.prank(patient);
        c.anchorRecord(bytes32(0), 1, 1, bytes32(uint256(1)));
        vm.expectRevert(EhrAccess.ZeroDigest.selector);
        vm.prank(patient);
        c.anchorRecord(bytes32(0), AID, PID, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotAllowedToAnchor.selector, doctor, key));
        vm.prank(doctor);
        c.anchorRecord(bytes32(0), AID, PID, bytes32(uint256(1)));
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotAllowedToAnchor.selector, stranger, key));
        vm.prank(stranger);
        c.anchorRecord(bytes32(0), AID, PID, bytes32(uint256(1)));
        _grant(0);
        _anchor(doctor, bytes32(uint256(5)));
        assertEq(c.recordCount(key), 1, "one record");
    }

    function testFuzz_pages_return_what_exists_in_order(uint8 count, uint256 offset, uint256 limit) public {
        count = uint8(bound(count, 0, 40));
        limit = bound(limit, 0, c.MAX_PAGE());
        offset = bound(offset, 0, 60);
        for (uint256 i; i < count; ++i) {
            _anchor(patient, bytes32(i));
        }
        bytes32[] memory page = c.recordsPage(key, offset, limit);
        uint256 want = offset >= count ? 0 : (count - offset < limit ? count - offset : limit);
        assertEq(page.length, want, "page length");
        for (uint256 i; i < page.length; ++i) {
            assertEq(page[i], c.recordIdOf(patient, key, bytes32(offset + i)), "page order");
        }
        uint256 max = c.MAX_PAGE();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PageTooLarge.selector, max + 1, max));
        c.recordsPage(key, 0, max + 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PageTooLarge.selector, max + 1, max));
        c.grantsPage(key, 0, max + 1);
    }

    // ------------------------------------------------------------ access transactions

    function test_access_logs_allowed_and_denied_reads_and_counts_denials() public {
        bytes32 id = _anchor(patient, "r1");
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessDenied(key, doctor, id, EhrAccess.DenyReason.NoGrant, 1);
        _access(doctor, id);
        assertEq(_denied(doctor), 1, "denial counted");
        assertFalse(c.canRead(doctor, id), "no grant, no read");
        _grant(0);
        vm.roll(block.number + 1);
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessAllowed(key, doctor, id, false);
        _access(doctor, id);
        assertTrue(c.canRead(doctor, id), "granted and accessed");
        assertTrue(c.canRead(patient, id), "the patient reads their own");
        assertFalse(c.canRead(stranger, id), "a stranger does not");
        // The access window closes.
        vm.warp(block.timestamp + c.ACCESS_WINDOW() + 1);
        assertFalse(c.canRead(doctor, id), "access window over");
        // Unknown records are denied and logged.
        _access(doctor, bytes32(uint256(0xdead)));
        assertEq(_denied(doctor), 2, "unknown record denied");
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
        c.access(ids);
        if (n != 0 && n <= c.MAX_ACCESS_BATCH()) assertEq(_denied(doctor), n, "each unknown record denied");
    }

    function test_only_verified_providers_send_access_transactions() public {
        bytes32[] memory ids = new bytes32[](1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, stranger));
        vm.prank(stranger);
        c.access(ids);
        vm.prank(office);
        c.suspendProvider(doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, doctor));
        vm.prank(doctor);
        c.access(ids);
    }

    function test_an_access_before_a_revoke_and_regrant_does_not_count() public {
        bytes32 id = _anchor(patient, "r2");
        _grant(0);
        _access(doctor, id);
        vm.prank(patient);
        c.revoke(doctor);
        assertFalse(c.canRead(doctor, id), "revoked");
        vm.roll(block.number + 1);
        _grant(0);
        assertFalse(c.canRead(doctor, id), "the old access belongs to the old grant");
        vm.roll(block.number + 1);
        _access(doctor, id);
        assertTrue(c.canRead(doctor, id), "a new access counts");
    }

    // ------------------------------------------------------------ break-glass

    function test_break_glass_opens_for_an_hour_and_the_patient_can_end_it() public {
        bytes32 id = _anchor(patient, "r3");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownEmergencyReason.selector, 0));
        vm.prank(doctor);
        c.breakGlass(AID, PID, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownEmergencyReason.selector, 6));
        vm.prank(doctor);
        c.breakGlass(AID, PID, 6);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotVerified.selector, stranger));
        vm.prank(stranger);
        c.breakGlass(AID, PID, 1);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NoOpenEmergency.selector, key, doctor));
        vm.prank(patient);
        c.endEmergency(doctor);
        vm.prank(doctor);
        c.breakGlass(AID, PID, 2);
        assertEq(c.emergencyUntil(key, doctor), block.timestamp + c.BREAK_GLASS_DURATION(), "open an hour");
        vm.roll(block.number + 1);
        _access(doctor, id);
        assertTrue(c.canRead(doctor, id), "emergency read");
        vm.prank(patient);
        c.endEmergency(doctor);
        assertEq(c.emergencyUntil(key, doctor), 0, "ended");
        assertFalse(c.canRead(doctor, id), "no read after the end");
    }

    function test_a_revoke_ends_an_open_emergency() public {
        _grant(0);
        vm.prank(doctor);
        c.breakGlass(AID, PID, 1);
        vm.prank(patient);
        c.revoke(doctor);
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
                c.breakGlass(AID, PID, 1);
            } else {
                vm.prank(doctor);
                c.breakGlass(AID, PID, 1);
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
            c.breakGlass(AID, PID, 1);
        }
        vm.warp(first + 5 hours);
        vm.expectRevert(
            abi.encodeWithSelector(EhrAccess.EmergencyLimitReached.selector, key, doctor, uint64(first + 1 days))
        );
        vm.prank(doctor);
        c.breakGlass(AID, PID, 1);
        vm.warp(first + 1 days);
        vm.prank(doctor);
        c.breakGlass(AID, PID, 1);
    }

    function test_grants_page_lists_each_provider_with_its_grant() public {
        assertEq(uint256(c.patientKey(AID, PID)), (uint256(AID) << 64) | PID, "patientKey = aid << 64 | pid");
        address other = address(0xD0D);
        vm.prank(other);
        c.registerProvider();
        _grant(0);
        vm.prank(patient);
        c.grant(other, uint64(block.timestamp + 1 days));
        (address[] memory who, EhrAccess.Grant[] memory what) = c.grantsPage(key, 0, 10);
        assertEq(who.length, 2, "two grantees");
        assertEq(who[0], doctor, "first granted first");
        assertEq(what[0].expiresAt, type(uint64).max, "open-ended");
        assertEq(who[1], other, "second");
        assertEq(what[1].expiresAt, block.timestamp + 1 days, "expiry kept");
        (who,) = c.grantsPage(key, 1, 10);
        assertEq(who.length, 1, "offset");
        uint256 max = c.MAX_PAGE();
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.PageTooLarge.selector, max + 1, max));
        c.requestsPage(key, 0, max + 1);
    }

    function test_break_glass_after_a_revoke_says_so_and_lapses_after_an_hour() public {
        bytes32 id = _anchor(patient, "r4");
        _grant(0);
        vm.prank(patient);
        c.revoke(doctor);
        uint64 until = uint64(block.timestamp + c.BREAK_GLASS_DURATION());
        vm.expectEmit(true, true, false, true, address(c));
        emit EhrAccess.BreakGlassOpened(key, doctor, 3, until, true);
        vm.prank(doctor);
        c.breakGlass(AID, PID, 3);
        vm.roll(block.number + 1);
        vm.expectEmit(true, true, true, true, address(c));
        emit EhrAccess.AccessAllowed(key, doctor, id, true);
        _access(doctor, id);
        assertTrue(c.canRead(doctor, id), "emergency read");
        vm.warp(until);
        assertEq(c.emergencyUntil(key, doctor), 0, "lapsed after an hour");
        assertFalse(c.canRead(doctor, id), "no read after the hour");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.UnknownPatient.selector, 4, 4));
        vm.prank(doctor);
        c.breakGlass(4, 4, 1);
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
        c.registerPatient(5, 6, deadline, twin);
        // v given as 0/1 is accepted like 27/28.
        bytes memory low = abi.encodePacked(r, s_, uint8(v - 27));
        vm.prank(account);
        c.registerPatient(5, 6, deadline, low);
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
        assertFalse(c.canRead(patient, bytes32(uint256(0xabc))), "nobody reads an unanchored record");
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.ProviderNotActive.selector, stranger));
        vm.prank(office);
        c.suspendProvider(stranger);
    }

    function test_patient_only_calls_refuse_everyone_else() public {
        vm.startPrank(doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor));
        c.endEmergency(doctor);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor));
        c.approveRequest(doctor, 0);
        vm.expectRevert(abi.encodeWithSelector(EhrAccess.NotPatient.selector, doctor));
        c.declineRequest(doctor);
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
        (, uint128 p, address author,) = c.records(theirs);
        assertEq(uint256(p), uint256(key), "same patient");
        assertEq(author, doctor, "their own authorship");
        (, , author,) = c.records(mine);
        assertEq(author, patient, "the first record is untouched");
    }
}
