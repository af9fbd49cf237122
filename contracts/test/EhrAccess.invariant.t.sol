// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {EhrAccess} from "../src/EhrAccess.sol";

/// @notice Random sequences of what patients, providers and the records office can do, with the
///         time moving. Next to the contract the handler keeps its own model of the rules
///         (grants, revokes, emergencies, verified providers, granted accesses and their blocks);
///         the invariants compare the contract with that model after every call.
contract Handler is Test {
    EhrAccess public c;
    address public office = address(0x0FF1CE);
    address[3] public patients = [address(0x1001), address(0x1002), address(0x1003)];
    address[3] public providers = [address(0x2001), address(0x2002), address(0x2003)];
    address public stranger = address(0x3001);
    uint64 internal constant WINDOW = 30 minutes;

    bytes32[] public ids;
    mapping(bytes32 => uint256) public patientOfRecord; // index into `patients`
    mapping(bytes32 => address) public authorOfRecord;
    /// Each record's proof, as share nodes keep it.
    mapping(bytes32 => EhrAccess.RecordProof) internal proofOf;

    // The model.
    mapping(address => bool) internal verified;
    mapping(uint256 => mapping(address => uint64)) internal grantExpiry; // 0: never granted
    mapping(uint256 => mapping(address => bool)) internal revoked;
    /// Block of the latest grant or emergency opening: accesses count from it.
    mapping(uint256 => mapping(address => uint256)) internal sinceBlock;
    mapping(uint256 => mapping(address => uint256)) internal emergencyUntil;
    /// The provider's latest allowed access event for the record under the record's own
    /// patient: what a share node finds in the receipt the request names.
    mapping(bytes32 => mapping(address => uint256)) public accessTime;
    mapping(bytes32 => mapping(address => uint256)) public accessBlock;
    mapping(address => uint256) public denials;
    /// Set if an account with no role ever sent an access transaction.
    bool public strangerGotIn;

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
                verified[providers[i]] = true;
            }
        }
    }

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function _grantActive(uint256 p, address d) internal view returns (bool) {
        uint64 e = grantExpiry[p][d];
        return e != 0 && !revoked[p][d] && block.timestamp < e;
    }

    function _allowed(uint256 p, address d) internal view returns (bool) {
        return verified[d] && (_grantActive(p, d) || emergencyUntil[p][d] > block.timestamp);
    }

    /// What `canRead` must answer, by the model.
    function modelCanRead(address who, bytes32 id) external view returns (bool) {
        uint256 p = patientOfRecord[id];
        if (who == patients[p]) return true;
        if (!_allowed(p, who)) return false;
        uint256 t = accessTime[id][who];
        if (t == 0 || block.timestamp > t + WINDOW) return false;
        return accessBlock[id][who] > sinceBlock[p][who];
    }

    function grant(uint8 p, uint8 d, uint32 secs) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        uint64 expiry = secs == 0 ? 0 : uint64(block.timestamp) + secs;
        vm.prank(patients[pi]);
        try c.grant(_key(pi), prov, expiry) {
            grantExpiry[pi][prov] = expiry == 0 ? type(uint64).max : expiry;
            revoked[pi][prov] = false;
            sinceBlock[pi][prov] = block.number;
        } catch {}
    }

    function revoke(uint8 p, uint8 d) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        vm.prank(patients[pi]);
        try c.revoke(_key(pi), prov) {
            revoked[pi][prov] = true;
            emergencyUntil[pi][prov] = 0;
        } catch {}
    }

    function _key(uint256 pi) internal view returns (uint128) {
        return c.patientKey(uint64(pi) + 1, 1);
    }

    function anchor(uint8 who, uint8 p, bytes32 salt) external {
        uint256 pi = p % 3;
        address author = who % 2 == 0 ? patients[pi] : providers[who % 3];
        uint128 k = _key(pi);
        bytes32 id = c.recordIdOf(author, k, salt);
        bytes32 digest = keccak256(abi.encode(salt, author));
        bytes32 leaf = c.leafOf(id, k, author, digest);
        vm.prank(author);
        try c.anchor(leaf, 1) {
            ids.push(id);
            patientOfRecord[id] = pi;
            authorOfRecord[id] = author;
            EhrAccess.RecordProof storage rec = proofOf[id];
            (rec.patient, rec.author, rec.salt, rec.digest, rec.root) = (k, author, salt, digest, leaf);
        } catch {}
    }

    function proof(bytes32 id) external view returns (EhrAccess.RecordProof memory) {
        return proofOf[id];
    }

    /// An access transaction naming patient `p` and records that may be anyone's (the
    /// contract does not look them up): it counts only for the records of `p`.
    function access(uint8 d, uint8 p, uint256 idIndex, uint8 n) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        n = uint8(bound(n, 1, 4));
        bytes32[] memory batch = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            batch[i] = ids.length == 0 ? bytes32(idIndex + i) : ids[(idIndex + i) % ids.length];
        }
        bool allowed = _allowed(pi, prov);
        vm.prank(prov);
        try c.access(_key(pi), batch) {
            for (uint256 i; i < n; ++i) {
                bytes32 id = batch[i];
                if (!allowed) {
                    ++denials[prov];
                } else if (authorOfRecord[id] != address(0) && patientOfRecord[id] == pi) {
                    accessTime[id][prov] = block.timestamp;
                    accessBlock[id][prov] = block.number;
                }
            }
        } catch {}
    }

    function breakGlass(uint8 d, uint8 p, uint8 reason) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        vm.prank(prov);
        try c.breakGlass(_key(pi), uint8(bound(reason, 1, 5))) {
            emergencyUntil[pi][prov] = block.timestamp + 1 hours;
            sinceBlock[pi][prov] = block.number;
        } catch {}
    }

    function endEmergency(uint8 p, uint8 d) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        vm.prank(patients[pi]);
        try c.endEmergency(_key(pi), prov) {
            emergencyUntil[pi][prov] = 0;
        } catch {}
    }

    function verify(uint8 d) external {
        vm.prank(office);
        try c.verifyProvider(providers[d % 3]) {
            verified[providers[d % 3]] = true;
        } catch {}
    }

    function suspend(uint8 d) external {
        vm.prank(office);
        try c.suspendProvider(providers[d % 3]) {
            verified[providers[d % 3]] = false;
        } catch {}
    }

    function strangerTries(uint256 idIndex) external {
        bytes32[] memory batch = new bytes32[](1);
        batch[0] = ids.length == 0 ? bytes32(idIndex) : ids[idIndex % ids.length];
        vm.prank(stranger);
        try c.access(_key(0), batch) {
            strangerGotIn = true;
        } catch {}
        // Anyone may anchor a root, a stranger too, even one claiming a patient's record: it
        // must open nothing (the canRead invariant asks for the stranger too).
        bytes32 forged = c.leafOf(bytes32(idIndex), _key(0), stranger, bytes32(uint256(1)));
        vm.prank(stranger);
        try c.anchor(forged, 1) {} catch {}
    }

    /// A revoke and a new grant a block later, with no time passing: accesses made under the
    /// old grant must not count for the new one.
    function revokeAndRegrant(uint8 p, uint8 d) external {
        (uint256 pi, address prov) = (p % 3, providers[d % 3]);
        vm.prank(patients[pi]);
        try c.revoke(_key(pi), prov) {
            revoked[pi][prov] = true;
            emergencyUntil[pi][prov] = 0;
        } catch {}
        vm.roll(block.number + 1);
        vm.prank(patients[pi]);
        try c.grant(_key(pi), prov, 0) {
            grantExpiry[pi][prov] = type(uint64).max;
            revoked[pi][prov] = false;
            sinceBlock[pi][prov] = block.number;
        } catch {}
    }

    /// Minutes to days: inside and beyond the access window, the hour of an emergency, the day
    /// of the break-glass limit.
    function passTime(uint32 secs) external {
        vm.warp(block.timestamp + bound(secs, 1, 30 hours));
        vm.roll(block.number + 1);
    }

    function nextBlock() external {
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

    /// `canRead`, given the requester's latest allowed access event for the record under its
    /// own patient (what a share node finds in the receipt), is exactly the model's answer: true
    /// for the record's patient, and for a verified provider with an active grant or an open
    /// emergency and such an access, within the window, made after the latest grant or
    /// emergency opening; false for everyone else.
    function invariant_canRead_is_exactly_the_rules() public view {
        uint256 n = h.idCount();
        address[7] memory who = [
            h.patients(0), h.patients(1), h.patients(2), h.providers(0), h.providers(1), h.providers(2), h.stranger()
        ];
        for (uint256 i; i < n; ++i) {
            bytes32 id = h.ids(i);
            for (uint256 j; j < who.length; ++j) {
                bool actual = c.canRead(
                    who[j], h.proof(id), uint64(h.accessBlock(id, who[j])), uint64(h.accessTime(id, who[j]))
                );
                bool expected = h.modelCanRead(who[j], id);
                assertTrue(actual == expected, actual ? "canRead says yes, the rules say no" : "canRead says no, the rules say yes");
            }
        }
    }

    /// Every denied attempt is counted, once: the counters equal the model's count (and so
    /// never decrease).
    function invariant_denials_are_counted_exactly() public view {
        for (uint256 i; i < 3; ++i) {
            address d = h.providers(i);
            (, uint32 counted,) = c.providers(d);
            assertEq(counted, h.denials(d), "denial counter");
        }
    }

    /// An account with no role cannot send access transactions.
    function invariant_strangers_get_nowhere() public view {
        assertFalse(h.strangerGotIn(), "a stranger got in");
    }

    /// A record's proof stays anchored under its own id: its patient and author are the ones
    /// it was anchored with, forever.
    function invariant_a_records_patient_and_author_never_change() public view {
        uint256 n = h.idCount();
        for (uint256 i; i < n; ++i) {
            bytes32 id = h.ids(i);
            EhrAccess.RecordProof memory p = h.proof(id);
            (bytes32 derived, bool anchored) = c.isAnchored(p);
            assertTrue(anchored, "anchor lost");
            assertEq(derived, id, "id changed");
            assertEq(uint256(p.patient), uint256(c.patientKey(uint64(h.patientOfRecord(id)) + 1, 1)), "patient changed");
            assertEq(p.author, h.authorOfRecord(id), "author changed");
        }
    }
}
