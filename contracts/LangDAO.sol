// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The part of ERC-20 this contract uses.
interface IERC20Minimal {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title LangDAO: per-second paid tutoring sessions, settled in one ERC-20
/// @notice confab's own implementation of the LangDAO session interface. The calls and views a backend uses
///         (`endSession(address)`, `activeSessions(address)`, `getCurrentSessionCost(uint256)`, the
///         `SessionStarted` / `SessionEnded` events and the `Session` layout) match the public LangDAO
///         contract, so the same backend code works against either deployment.
///
///         Money flow: a student `deposit`s tokens (after `approve`); `startSession` moves the student's whole
///         deposited balance into the session's escrow; `endSession` pays the tutor
///         `min(elapsed seconds * ratePerSecond, escrow)` and returns the rest of the escrow to the student's
///         balance, which `withdraw` sends back. Amounts are in the token's smallest unit, times in seconds.
///
///         Every state change happens before any token transfer (checks-effects-interactions) and every
///         transfer result is checked.
contract LangDAO {
    /// @notice A session as the public LangDAO contract lays it out (field order is part of the interface:
    ///         the auto-generated `activeSessions(address)` getter returns these fields in this order).
    struct Session {
        address student;
        address tutor;
        address token;
        uint256 startTime; // unix seconds (block timestamp)
        uint256 endTime; // unix seconds, 0 while active
        uint256 ratePerSecond; // token units per second
        uint256 totalPaid; // token units paid to the tutor, set when the session ends
        uint8 language;
        uint256 id;
        bool isActive;
    }

    /// @notice A session must be funded for at least this many seconds at the tutor's rate to start.
    uint256 public constant MIN_PREPAID_SECONDS = 60;

    /// @notice The backend wallet: may end any active session.
    address public immutable owner;
    /// @notice The only token deposits, escrows and payments are made in.
    address public immutable token;

    /// @notice Number of sessions ever started; the latest session id (ids start at 1).
    uint256 public sessionCounter;

    /// @notice Deposited token units not held in a session's escrow, per student.
    mapping(address student => uint256 amount) public balances;
    /// @notice Rate in token units per second per tutor and language; 0 means "does not teach it".
    mapping(address tutor => mapping(uint8 language => uint256 ratePerSecond)) public tutorRates;
    /// @notice The tutor's current session (`isActive == false` when there is none).
    mapping(address tutor => Session session) public activeSessions;
    /// @notice Every session by id, kept after it ends.
    mapping(uint256 sessionId => Session session) public sessionHistory;
    /// @notice Token units escrowed by each session when it started.
    mapping(uint256 sessionId => uint256 amount) public sessionEscrow;
    /// @notice Total token units paid to each tutor.
    mapping(address tutor => uint256 amount) public tutorEarnings;

    event TutorRegistered(address indexed tutor, uint8 language, uint256 ratePerSecond);
    event FundsDeposited(address indexed user, address indexed token, uint256 amount);
    event FundsWithdrawn(address indexed user, address indexed token, uint256 amount);
    event SessionStarted(uint256 indexed sessionId, address indexed student, address indexed tutor, uint8 language);
    event SessionEnded(uint256 indexed sessionId, address indexed tutorAddress, uint256 duration, uint256 totalPaid);

    /// @param token_ the ERC-20 every payment is made in
    /// @param owner_ the backend wallet allowed to end any session
    constructor(address token_, address owner_) {
        require(token_ != address(0), "Token is the zero address");
        require(token_.code.length > 0, "Token is not a contract");
        require(owner_ != address(0), "Owner is the zero address");
        token = token_;
        owner = owner_;
    }

    // ============ tutors ============

    /// @notice Offer `language` at `ratePerSecond` token units per second; call again to change the rate.
    ///         A running session keeps the rate it started with.
    function registerTutor(uint8 language, uint256 ratePerSecond) external {
        require(ratePerSecond > 0, "Rate must be greater than 0");
        tutorRates[msg.sender][language] = ratePerSecond;
        emit TutorRegistered(msg.sender, language, ratePerSecond);
    }

    // ============ students' funds ============

    /// @notice Move `amount` tokens from the caller (who approved this contract) into their balance here.
    function deposit(uint256 amount) external {
        require(amount > 0, "Amount must be greater than 0");
        balances[msg.sender] += amount;
        emit FundsDeposited(msg.sender, token, amount);
        _safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Send `amount` of the caller's balance back to them. Escrowed funds return to the balance
    ///         when their session ends.
    function withdraw(uint256 amount) external {
        require(amount > 0, "Amount must be greater than 0");
        require(balances[msg.sender] >= amount, "Insufficient balance");
        balances[msg.sender] -= amount;
        emit FundsWithdrawn(msg.sender, token, amount);
        _safeTransfer(msg.sender, amount);
    }

    // ============ sessions ============

    /// @notice Start a session with `tutor` in `language`, escrowing the caller's whole balance.
    /// @return sessionId the new session's id
    function startSession(address tutor, uint8 language) external returns (uint256 sessionId) {
        require(tutor != msg.sender, "Cannot tutor yourself");
        require(!activeSessions[tutor].isActive, "There should be no ongoing session for this tutor");
        uint256 rate = tutorRates[tutor][language];
        require(rate > 0, "Tutor does not offer this language");
        uint256 escrow = balances[msg.sender];
        require(escrow / MIN_PREPAID_SECONDS >= rate, "Student does not have sufficient balance");

        sessionId = ++sessionCounter;
        balances[msg.sender] = 0;
        sessionEscrow[sessionId] = escrow;
        Session memory session = Session({
            student: msg.sender,
            tutor: tutor,
            token: token,
            startTime: block.timestamp,
            endTime: 0,
            ratePerSecond: rate,
            totalPaid: 0,
            language: language,
            id: sessionId,
            isActive: true
        });
        activeSessions[tutor] = session;
        sessionHistory[sessionId] = session;
        emit SessionStarted(sessionId, msg.sender, tutor, language);
    }

    /// @notice End `tutor`'s active session: pay the tutor `min(elapsed seconds * rate, escrow)` and return the
    ///         rest of the escrow to the student's balance. Callable by the student, the tutor or the owner.
    function endSession(address tutor) external {
        Session memory session = activeSessions[tutor];
        require(session.isActive, "Session not active");
        require(
            msg.sender == session.student || msg.sender == session.tutor || msg.sender == owner,
            "Caller is not the student, tutor nor owner"
        );

        uint256 duration = block.timestamp - session.startTime;
        uint256 escrow = sessionEscrow[session.id];
        uint256 paid = _cost(duration, session.ratePerSecond, escrow);

        // Effects.
        delete activeSessions[tutor];
        session.isActive = false;
        session.endTime = block.timestamp;
        session.totalPaid = paid;
        sessionHistory[session.id] = session;
        sessionEscrow[session.id] = 0;
        balances[session.student] += escrow - paid;
        tutorEarnings[tutor] += paid;
        emit SessionEnded(session.id, tutor, duration, paid);

        // Interaction.
        if (paid > 0) {
            _safeTransfer(tutor, paid);
        }
    }

    // ============ views ============

    /// @notice What ending session `sessionId` would pay the tutor now (token units). Reverts unless active.
    function getCurrentSessionCost(uint256 sessionId) external view returns (uint256) {
        Session storage session = sessionHistory[sessionId];
        require(session.isActive, "Session is not active");
        return _cost(block.timestamp - session.startTime, session.ratePerSecond, sessionEscrow[sessionId]);
    }

    /// @notice Session `sessionId` as recorded (active or ended).
    function getSession(uint256 sessionId) external view returns (Session memory) {
        return sessionHistory[sessionId];
    }

    // ============ internals ============

    /// @dev `min(duration * rate, cap)` without overflowing.
    function _cost(uint256 duration, uint256 rate, uint256 cap) private pure returns (uint256) {
        if (rate == 0 || duration == 0) {
            return 0;
        }
        if (duration > cap / rate) {
            return cap;
        }
        return duration * rate;
    }

    /// @dev Transfer that accepts tokens returning `true` or nothing, and reverts on anything else.
    function _safeTransfer(address to, uint256 amount) private {
        (bool ok, bytes memory data) = token.call(abi.encodeCall(IERC20Minimal.transfer, (to, amount)));
        require(ok && (data.length == 0 || abi.decode(data, (bool))), "Token transfer failed");
    }

    /// @dev `transferFrom` with the same result checks as `_safeTransfer`.
    function _safeTransferFrom(address from, address to, uint256 amount) private {
        (bool ok, bytes memory data) = token.call(abi.encodeCall(IERC20Minimal.transferFrom, (from, to, amount)));
        require(ok && (data.length == 0 || abi.decode(data, (bool))), "Token transfer failed");
    }
}
