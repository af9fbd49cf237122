// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {EhrAccess} from "../src/EhrAccess.sol";

/// @notice Random sequences of what patients, providers and the records office can do, with the
///         time moving: the fuzzer calls these, the invariants below are checked after each.
contract Handler is Test {
    EhrAccess public c;
    address public office = address(0x0FF1CE);
    address[3] public patients = [address(0x1001), address(0x1002), address(0x1003)];
    address[3] public providers = [address(0x2001), address(0x2002), address(0x2003)];
    address public stranger = address(0x3001);
    bytes32[] public ids;
    mapping(bytes32 => uint128) public patientOfRecord;
    mapping(bytes32 => address) public authorOfRecord;
    mapping(address => uint32) public lastDenied;
    /// Set when a provider's denial counter went down (must never happen).
    bool public deniedWentDown;

    constructor() {
        vm.warp(1_750_000_000);
        vm.roll(10);
        c = new EhrAccess(office);
        for (uint256 i; i < 3; ++i) {
            vm.prank(office);
            c.issuePatient(uint64(i + 1), 1, patients[i]);
            vm.prank(providers[i]);
            c.registerProvider();
            // The third stays pending until the fuzzer verifies it.
            if (i < 2) {
                vm.prank(office);
                c.verifyProvider(providers[i]);
            }
        }
    }

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function _observe() internal {
        for (uint256 i; i < 3; ++i) {
            (, uint32 d,) = c.providers(providers[i]);
            if (d < lastDenied[providers[i]]) deniedWentDown = true;
            lastDenied[providers[i]] = d;
        }
    }

    function grant(uint8 p, uint8 d, uint32 secs) external {
        vm.prank(patients[p % 3]);
        try c.grant(providers[d % 3], secs == 0 ? 0 : uint64(block.timestamp) + secs) {} catch {}
        _observe();
    }

    function revoke(uint8 p, uint8 d) external {
        vm.prank(patients[p % 3]);
        try c.revoke(providers[d % 3]) {} catch {}
        _observe();
    }

    function anchor(uint8 who, uint8 p, bytes32 salt) external {
        address author = who % 2 == 0 ? patients[p % 3] : providers[who % 3];
        uint64 aid = uint64(p % 3) + 1;
        vm.prank(author);
        try c.anchorRecord(salt, aid, 1, keccak256(abi.encode(salt, author))) returns (bytes32 id) {
            ids.push(id);
            patientOfRecord[id] = c.patientKey(aid, 1);
            authorOfRecord[id] = author;
        } catch {}
        _observe();
    }

    function access(uint8 d, uint256 idIndex, uint8 n) external {
        n = uint8(bound(n, 1, 4));
        bytes32[] memory batch = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            batch[i] = ids.length == 0 ? bytes32(idIndex + i) : ids[(idIndex + i) % ids.length];
        }
        vm.prank(providers[d % 3]);
        try c.access(batch) {} catch {}
        _observe();
    }

    function breakGlass(uint8 d, uint8 p, uint8 reason) external {
        vm.prank(providers[d % 3]);
        try c.breakGlass(uint64(p % 3) + 1, 1, uint8(bound(reason, 1, 5))) {} catch {}
        _observe();
    }

    function endEmergency(uint8 p, uint8 d) external {
        vm.prank(patients[p % 3]);
        try c.endEmergency(providers[d % 3]) {} catch {}
        _observe();
    }

    function verify(uint8 d) external {
        vm.prank(office);
        try c.verifyProvider(providers[d % 3]) {} catch {}
        _observe();
    }

    function suspend(uint8 d) external {
        vm.prank(office);
        try c.suspendProvider(providers[d % 3]) {} catch {}
        _observe();
    }

    function strangerTries(uint256 idIndex) external {
        bytes32[] memory batch = new bytes32[](1);
        batch[0] = ids.length == 0 ? bytes32(idIndex) : ids[idIndex % ids.length];
        vm.prank(stranger);
        try c.access(batch) {} catch {}
        vm.prank(stranger);
        try c.anchorRecord(bytes32(idIndex), 1, 1, bytes32(uint256(1))) {} catch {}
        _observe();
    }

    function passTime(uint32 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 2 days));
        vm.roll(block.number + 1);
    }
}

/// @notice The properties every sequence must keep.
contract EhrAccessInvariantTest is Test {
    Handler internal h;
    EhrAccess internal c;

    function setUp() public {
        h = new Handler();
        c = h.c();
        targetContract(address(h));
    }

    /// `canRead` is true only for the record's patient, or for a verified provider with an
    /// active grant or an open emergency and a granted access within the window.
    function invariant_canRead_only_for_the_patient_or_a_provider_with_access_now() public view {
        uint256 n = h.idCount();
        address[7] memory who = [
            h.patients(0), h.patients(1), h.patients(2), h.providers(0), h.providers(1), h.providers(2), h.stranger()
        ];
        for (uint256 i; i < n; ++i) {
            bytes32 id = h.ids(i);
            (, uint128 patient,,) = c.records(id);
            for (uint256 j; j < who.length; ++j) {
                address a = who[j];
                if (!c.canRead(a, id)) continue;
                if (c.patientAccount(patient) == a) continue;
                (EhrAccess.ProviderStatus s,,) = c.providers(a);
                assertTrue(s == EhrAccess.ProviderStatus.Verified, "a reader who is not a verified provider");
                (EhrAccess.DenyReason r,) = c.checkAccess(patient, a);
                assertTrue(r == EhrAccess.DenyReason.None, "a reader without grant or emergency");
                (uint64 at,) = c.lastAccess(id, a);
                assertTrue(at != 0 && block.timestamp <= at + c.ACCESS_WINDOW(), "a reader without a recent access");
                assertTrue(a != h.stranger(), "the stranger reads");
            }
        }
    }

    /// Denial counters only ever grow.
    function invariant_denial_counters_never_decrease() public view {
        assertFalse(h.deniedWentDown(), "a denial counter went down");
    }

    /// A record's patient and author are the ones it was anchored with, forever.
    function invariant_a_records_patient_and_author_never_change() public view {
        uint256 n = h.idCount();
        for (uint256 i; i < n; ++i) {
            bytes32 id = h.ids(i);
            (bytes32 digest, uint128 patient, address author, uint64 at) = c.records(id);
            assertEq(uint256(patient), uint256(h.patientOfRecord(id)), "patient changed");
            assertEq(author, h.authorOfRecord(id), "author changed");
            assertTrue(at != 0 && digest != bytes32(0), "anchor lost");
        }
    }
}
