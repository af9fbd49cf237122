// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The cheatcodes these tests use, declared here instead of depending on forge-std (the
///         npm `forge-std` package is an unofficial repackaging). Foundry answers them at this
///         well-known address.
interface Vm {
    function warp(uint256 timestamp) external;
    function roll(uint256 blockNumber) external;
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function expectRevert(bytes calldata revertData) external;
    function expectRevert(bytes4 selector) external;
    function expectRevert() external;
    function expectEmit(bool topic1, bool topic2, bool topic3, bool data, address emitter) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function assume(bool condition) external pure;
    function label(address account, string calldata name) external;
}

/// @notice Assertions and helpers shared by the tests; a failed `require` fails the test with
///         its message.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// The contracts the invariant fuzzer calls (when a test sets them).
    address[] private targets;

    function targetContracts() public view returns (address[] memory) {
        return targets;
    }

    function targetContract(address target) internal {
        targets.push(target);
    }

    function assertTrue(bool ok, string memory what) internal pure {
        require(ok, what);
    }

    function assertFalse(bool bad, string memory what) internal pure {
        require(!bad, what);
    }

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", _str(a), " != ", _str(b)));
    }

    function assertEq(address a, address b, string memory what) internal pure {
        require(a == b, what);
    }

    function assertEq(bytes32 a, bytes32 b, string memory what) internal pure {
        require(a == b, what);
    }

    /// `x` folded into [lo, hi].
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        return lo + (x % (hi - lo + 1));
    }

    function _str(uint256 v) private pure returns (string memory) {
        if (v == 0) return "0";
        bytes memory b;
        while (v != 0) {
            b = abi.encodePacked(bytes1(uint8(48 + (v % 10))), b);
            v /= 10;
        }
        return string(b);
    }
}
