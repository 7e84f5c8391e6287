"""Shipment approvals as pure rules: the credit check, the authority matrix, who may decide,
the approval states, and the [approvals]/[api] settings. Amounts are worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credit.approval import (
    REGIONAL_APPROVER_ROLES,
    Approver,
    AuthorityLevel,
    AuthorityMatrix,
    CreditCheck,
    CreditPosition,
    IllegalTransition,
    Outcome,
    RequestParty,
    Status,
    after_decision,
    check_request,
    default_matrix,
    initial_status,
    refusal_to_decide,
)
from credit.ratings import Rating
from credit.settings import ConfigError, Settings, load_settings

D = Decimal


def position(
    *,
    rating: Rating = Rating.B,
    limit: str = "100000.00",
    open_: str = "0.00",
    unshipped: str = "0.00",
    overdue: str = "0.00",
    hold: bool = False,
    blacklisted: bool = False,
    probation: bool = False,
) -> CreditPosition:
    return CreditPosition(
        rating=rating,
        credit_limit=D(limit),
        open_receivables=D(open_),
        approved_unshipped=D(unshipped),
        overdue_beyond_terms=D(overdue),
        credit_hold=hold,
        blacklisted=blacklisted,
        on_probation=probation,
    )


def needs(excess: str, overdue: str = "0.00", reasons=("over_limit",)) -> CreditCheck:
    """A check that needs approval with the given excess and overdue amounts."""
    return CreditCheck(Outcome.NEEDS_APPROVAL, reasons, D("0.00"), D(excess), D(overdue))


# The built-in matrix: regional manager 50,000/50,000, credit manager 200,000/200,000,
# executive uncapped.
MATRIX = default_matrix()
RM, CM, EXEC = 0, 1, 2


# --- the credit check ------------------------------------------------------------------------


def test_exposure_exactly_at_the_limit_is_approved_at_once():
    # 60,000 open + 30,000 approved unshipped + 10,000 now = 100,000 = the limit
    check = check_request(position(open_="60000.00", unshipped="30000.00"), D("10000.00"))
    assert check == CreditCheck(
        Outcome.APPROVE, ("within_policy",), D("100000.00"), D("0.00"), D("0.00")
    )
    assert initial_status(check) is Status.APPROVED


def test_one_cent_over_the_limit_needs_approval_with_an_excess_of_one_cent():
    check = check_request(position(open_="60000.00", unshipped="30000.00"), D("10000.01"))
    assert check.outcome is Outcome.NEEDS_APPROVAL
    assert check.reasons == ("over_limit",)
    assert check.exposure == D("100000.01")
    assert check.excess == D("0.01")
    assert initial_status(check) is Status.PENDING


def test_approved_but_unshipped_requests_count_in_the_exposure():
    # without the 50,000 approved-unshipped: 40,000 + 20,000 = 60,000, within 100,000
    assert check_request(position(open_="40000.00"), D("20000.00")).outcome is Outcome.APPROVE
    check = check_request(position(open_="40000.00", unshipped="50000.00"), D("20000.00"))
    assert check.exposure == D("110000.00")
    assert check.excess == D("10000.00")
    assert check.reasons == ("over_limit",)


def test_anything_overdue_needs_approval_even_within_the_limit():
    check = check_request(position(open_="1000.00", overdue="0.01"), D("1.00"))
    assert check.outcome is Outcome.NEEDS_APPROVAL
    assert check.reasons == ("over_term",)
    assert (check.excess, check.overdue) == (D("0.00"), D("0.01"))


def test_per_deal_customers_have_a_zero_limit_so_every_shipment_is_excess():
    check = check_request(position(rating=Rating.D, limit="0"), D("2500.00"))
    assert check.reasons == ("rating_d", "over_limit")
    assert check.excess == D("2500.00")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"rating": Rating.D}, "rating_d"),
        ({"rating": Rating.X}, "rating_x"),
        ({"probation": True}, "probation"),
        ({"hold": True}, "credit_hold"),
    ],
)
def test_risky_customers_need_approval_even_well_within_the_limit(kwargs, reason):
    check = check_request(position(**kwargs), D("1.00"))
    assert check.outcome is Outcome.NEEDS_APPROVAL
    assert check.reasons == (reason,)
    assert (check.excess, check.overdue) == (D("0.00"), D("0.00"))
    # no excess, nothing overdue: the lowest level decides
    assert MATRIX.deciding_level(check) == RM


@pytest.mark.parametrize("amount", ["0.01", "1.00", "100000.00", "99999999.99"])
@pytest.mark.parametrize(
    "kwargs",
    [{"rating": Rating.H}, {"blacklisted": True}, {"rating": Rating.A, "blacklisted": True}],
)
def test_blacklisted_customers_are_refused_whatever_the_amount(kwargs, amount):
    check = check_request(position(**kwargs), D(amount))
    assert check.outcome is Outcome.REFUSE
    assert initial_status(check) is Status.REFUSED
    with pytest.raises(ValueError, match="cannot be approved by anyone"):
        MATRIX.deciding_level(check)
    with pytest.raises(ValueError, match="cannot be approved by anyone"):
        MATRIX.required_levels(check)


def test_reasons_come_in_a_stable_order_and_a_refusal_lists_them_all():
    everything = position(
        rating=Rating.H,
        blacklisted=True,
        probation=True,
        hold=True,
        open_="100000.00",
        overdue="5.00",
    )
    check = check_request(everything, D("1.00"))
    assert check.outcome is Outcome.REFUSE
    assert check.reasons == (
        "blacklisted",
        "rating_h",
        "probation",
        "credit_hold",
        "over_limit",
        "over_term",
    )
    x_on_hold = check_request(position(rating=Rating.X, hold=True, overdue="1.00"), D("1.00"))
    assert x_on_hold.reasons == ("rating_x", "credit_hold", "over_term")


@pytest.mark.parametrize("amount", [D("0"), D("0.00"), D("-1.00")])
def test_the_amount_must_be_positive(amount):
    with pytest.raises(ValueError, match="positive"):
        check_request(position(), amount)


def test_amounts_are_decimals_never_floats():
    with pytest.raises(TypeError, match="amount must be a Decimal"):
        check_request(position(), 10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="credit_limit"):
        CreditPosition(Rating.A, 1000.0, D(0), D(0), D(0), False, False, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overdue_beyond_terms must not be negative"):
        position(overdue="-0.01")
    # ints (e.g. a SQL coalesce(sum(...), 0)) are exact, so they are taken as Decimals
    ints = CreditPosition("C", 1000, 0, 0, 0, False, False, False)  # type: ignore[arg-type]
    assert ints.rating is Rating.C
    assert check_request(ints, 1000).outcome is Outcome.APPROVE  # type: ignore[arg-type]


# --- the authority matrix --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("excess", "level"),
    [
        ("0.01", RM),
        ("50000.00", RM),  # exactly at the regional manager's cap: still theirs
        ("50000.01", CM),  # one cent over: the credit manager
        ("200000.00", CM),
        ("200000.01", EXEC),
        ("99999999.99", EXEC),
    ],
)
def test_excess_at_a_cap_stays_at_that_level_and_a_cent_over_goes_up(excess, level):
    assert MATRIX.deciding_level(needs(excess)) == level


@pytest.mark.parametrize(
    ("overdue", "level"),
    [("50000.00", RM), ("50000.01", CM), ("200000.00", CM), ("200000.01", EXEC)],
)
def test_overdue_caps_work_the_same_way(overdue, level):
    assert MATRIX.deciding_level(needs("0.00", overdue, ("over_term",))) == level


def test_the_deciding_level_is_the_higher_of_what_excess_and_overdue_each_need():
    # excess alone needs the regional manager, overdue alone the credit manager
    assert MATRIX.deciding_level(needs("10.00", "60000.00")) == CM
    # and the other way round: excess needs the executive, overdue the regional manager
    assert MATRIX.deciding_level(needs("250000.00", "1.00")) == EXEC


def test_caps_per_dimension_can_differ():
    matrix = AuthorityMatrix(
        (
            AuthorityLevel("regional_manager", D("50000.00"), D("0.00")),  # never over term
            AuthorityLevel("credit_manager", D("50000.00"), D("10000.00")),
            AuthorityLevel("executive", None, None),
        )
    )
    assert matrix.deciding_level(needs("50000.00")) == 0
    assert matrix.deciding_level(needs("1.00", "0.01")) == 1
    assert matrix.deciding_level(needs("50000.01", "0.00")) == 2


def test_from_a_credit_check_to_the_deciding_level():
    # limit 100,000; open 120,000 of which 30,000 overdue; a 40,000 shipment:
    # exposure 160,000, excess 60,000 (> 50,000: credit manager), overdue 30,000 (regional)
    check = check_request(position(open_="120000.00", overdue="30000.00"), D("40000.00"))
    assert check.reasons == ("over_limit", "over_term")
    assert (check.exposure, check.excess, check.overdue) == (
        D("160000.00"),
        D("60000.00"),
        D("30000.00"),
    )
    assert MATRIX.deciding_level(check) == CM


def test_single_decider_versus_a_chain():
    chained = AuthorityMatrix(MATRIX.levels, chain=True)
    assert MATRIX.required_levels(needs("60000.00")) == (CM,)
    assert chained.required_levels(needs("60000.00")) == (RM, CM)
    assert MATRIX.required_levels(needs("300000.00")) == (EXEC,)
    assert chained.required_levels(needs("300000.00")) == (RM, CM, EXEC)
    assert chained.required_levels(needs("1.00")) == (RM,)


def test_level_of_a_role():
    assert MATRIX.level_of("regional_manager") == 0
    assert MATRIX.level_of("executive") == 2
    assert MATRIX.level_of("rep") is None
    assert MATRIX.roles == ("regional_manager", "credit_manager", "executive")


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((), "at least one level"),
        (
            (
                AuthorityLevel("credit_manager", D("10"), D("10")),
                AuthorityLevel("credit_manager", None, None),
            ),
            "more than once: credit_manager",
        ),
        (
            (
                AuthorityLevel("credit_manager", D("200000"), D("0")),
                AuthorityLevel("regional_manager", D("50000"), D("0")),
                AuthorityLevel("executive", None, None),
            ),
            "max_excess must not decrease",
        ),
        (
            (
                AuthorityLevel("regional_manager", D("10"), D("500")),
                AuthorityLevel("credit_manager", D("20"), D("499.99")),
                AuthorityLevel("executive", None, None),
            ),
            "max_overdue must not decrease",
        ),
        (
            (
                AuthorityLevel("regional_manager", None, D("5")),
                AuthorityLevel("executive", D("10"), None),
            ),
            "'regional_manager' has no cap and 'executive' above it is capped",
        ),
        (
            (
                AuthorityLevel("regional_manager", D("10"), D("10")),
                AuthorityLevel("executive", None, D("1000000")),
            ),
            "top level ('executive') must have no caps",
        ),
        ((AuthorityLevel("rep", None, None),), "'rep' cannot approve"),
    ],
)
def test_an_unusable_matrix_is_refused(levels, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AuthorityMatrix(levels)


def test_a_level_refuses_a_negative_cap_and_float_caps():
    with pytest.raises(ValueError, match="must not be negative"):
        AuthorityLevel("credit_manager", D("-1"), None)
    with pytest.raises(TypeError):
        AuthorityLevel("credit_manager", 10.5, None)  # type: ignore[arg-type]


_caps = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False)
_amounts = st.decimals(min_value=0, max_value=2 * 10**7, places=2, allow_nan=False)


@st.composite
def _matrices(draw) -> AuthorityMatrix:
    roles = ["regional_manager", "credit_manager", "finance", "executive"]
    n = draw(st.integers(min_value=0, max_value=3))
    excess_caps = sorted(draw(st.lists(_caps, min_size=n, max_size=n)))
    overdue_caps = sorted(draw(st.lists(_caps, min_size=n, max_size=n)))
    levels = [AuthorityLevel(roles[i], excess_caps[i], overdue_caps[i]) for i in range(n)] + [
        AuthorityLevel("admin", None, None)
    ]
    return AuthorityMatrix(tuple(levels), chain=draw(st.booleans()))


@given(_matrices(), _amounts, _amounts)
def test_the_deciding_level_covers_the_amounts_and_the_level_below_never_does(
    matrix, excess, overdue
):
    check = needs(str(excess), str(overdue))
    level = matrix.deciding_level(check)
    assert matrix.levels[level].covers(check.excess, check.overdue)
    assert all(not matrix.levels[i].covers(check.excess, check.overdue) for i in range(level))
    required = matrix.required_levels(check)
    assert required[-1] == level
    assert required == (tuple(range(level + 1)) if matrix.chain else (level,))


# --- who may decide --------------------------------------------------------------------------

REP, REGIONAL, CREDIT, EXECUTIVE = 11, 21, 31, 41
NORTH, SOUTH = 1, 2
PARTY = RequestParty(requester_id=REP, region_id=NORTH)


def test_regional_approver_roles():
    assert frozenset({"regional_manager"}) == REGIONAL_APPROVER_ROLES


def test_a_regional_manager_decides_their_own_region_at_their_level():
    approver = Approver(REGIONAL, "regional_manager", NORTH)
    assert refusal_to_decide(approver, PARTY, MATRIX, RM) is None


def test_a_regional_manager_of_another_region_is_refused():
    approver = Approver(REGIONAL, "regional_manager", SOUTH)
    assert refusal_to_decide(approver, PARTY, MATRIX, RM) == "other_region"
    no_region = Approver(REGIONAL, "regional_manager", None)
    assert refusal_to_decide(no_region, PARTY, MATRIX, RM) == "other_region"


def test_a_credit_manager_decides_for_any_region():
    for region in (NORTH, SOUTH, None):
        approver = Approver(CREDIT, "credit_manager", region)
        assert refusal_to_decide(approver, RequestParty(REP, SOUTH), MATRIX, CM) is None


def test_a_lower_role_is_refused_for_a_higher_level_and_a_higher_role_may_decide_lower():
    regional = Approver(REGIONAL, "regional_manager", NORTH)
    assert refusal_to_decide(regional, PARTY, MATRIX, CM) == "above_authority"
    assert refusal_to_decide(regional, PARTY, MATRIX, EXEC) == "above_authority"
    executive = Approver(EXECUTIVE, "executive", None)
    for level in (RM, CM, EXEC):
        assert refusal_to_decide(executive, PARTY, MATRIX, level) is None


def test_the_requester_never_approves_their_own_request_even_with_the_top_role():
    boss = Approver(EXECUTIVE, "executive", None)
    own = RequestParty(requester_id=EXECUTIVE, region_id=NORTH)
    assert refusal_to_decide(boss, own, MATRIX, RM) == "own_request"
    assert refusal_to_decide(boss, own, MATRIX, EXEC) == "own_request"


def test_the_customers_rep_never_approves_the_risk_they_bring_in():
    # an ERP-raised request (no requester) for a customer whose rep is a regional manager
    party = RequestParty(requester_id=None, region_id=NORTH, rep_id=REGIONAL)
    approver = Approver(REGIONAL, "regional_manager", NORTH)
    assert refusal_to_decide(approver, party, MATRIX, RM) == "own_request"
    # an ERP-raised request bars nobody else
    erp = RequestParty(requester_id=None, region_id=NORTH)
    assert refusal_to_decide(approver, erp, MATRIX, RM) is None


def test_roles_outside_the_matrix_are_not_approvers():
    for role in ("rep", "finance", "legal", "admin"):
        assert refusal_to_decide(Approver(99, role, NORTH), PARTY, MATRIX, RM) == "not_an_approver"


def test_inactive_people_are_refused_first():
    gone = Approver(REP, "executive", None, active=False)  # also the requester
    assert refusal_to_decide(gone, PARTY, MATRIX, RM) == "inactive"


def test_reasons_are_checked_in_order():
    # own request beats not-an-approver; not-an-approver beats the rest
    assert refusal_to_decide(Approver(REP, "rep", SOUTH), PARTY, MATRIX, EXEC) == "own_request"
    assert refusal_to_decide(Approver(7, "legal", SOUTH), PARTY, MATRIX, EXEC) == "not_an_approver"
    # above authority beats other region
    wrong = Approver(REGIONAL, "regional_manager", SOUTH)
    assert refusal_to_decide(wrong, PARTY, MATRIX, CM) == "above_authority"


def test_a_level_outside_the_matrix_is_a_programming_error():
    with pytest.raises(ValueError, match="no authority level 3"):
        refusal_to_decide(Approver(EXECUTIVE, "executive", None), PARTY, MATRIX, 3)


# --- the approval state machine --------------------------------------------------------------


def test_initial_status_follows_the_outcome():
    assert initial_status(needs("1.00")) is Status.PENDING
    approve = CreditCheck(Outcome.APPROVE, ("within_policy",), D(1), D(0), D(0))
    refuse = CreditCheck(Outcome.REFUSE, ("blacklisted",), D(1), D(0), D(0))
    assert initial_status(approve) is Status.APPROVED
    assert initial_status(refuse) is Status.REFUSED


def test_pending_transitions():
    assert after_decision(Status.PENDING, "approve", final_level=True) is Status.APPROVED
    assert after_decision(Status.PENDING, "approve", final_level=False) is Status.PENDING
    assert after_decision(Status.PENDING, "reject", final_level=False) is Status.REJECTED
    assert after_decision(Status.PENDING, "reject", final_level=True) is Status.REJECTED
    assert after_decision(Status.PENDING, "expire", final_level=False) is Status.EXPIRED
    # statuses as stored (plain strings) work too
    assert after_decision("pending", "approve", final_level=True) is Status.APPROVED  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "status", [Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.REFUSED]
)
@pytest.mark.parametrize("decision", ["approve", "reject", "expire"])
def test_a_decided_request_takes_no_further_decision(status, decision):
    # e.g. a second click two seconds later, or a stale button after the request lapsed
    with pytest.raises(IllegalTransition, match=f"already {status.value}"):
        after_decision(status, decision, final_level=True)


def test_an_unknown_decision_is_refused():
    with pytest.raises(ValueError, match="unknown decision 'maybe'"):
        after_decision(Status.PENDING, "maybe", final_level=True)
    assert issubclass(IllegalTransition, ValueError)


# --- [approvals] and [api] settings ----------------------------------------------------------


@pytest.fixture
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("CREDITBOT_"):
            monkeypatch.delenv(key)


def _load(tmp_path, text: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_the_default_settings_build_the_default_matrix(_clean_env):
    settings = Settings()
    assert settings.approvals.matrix == MATRIX
    assert settings.approvals.matrix.chain is False
    assert settings.approvals.remind_after_hours == 4
    assert settings.approvals.escalate_after_hours == 24
    assert settings.approvals.expire_after_hours == 72
    assert settings.api.auth == "api_key"
    assert settings.api.api_keys == []


def test_levels_from_toml_parse_money_exactly(tmp_path, _clean_env):
    settings = _load(
        tmp_path,
        "[approvals]\nchain = true\n"
        '[[approvals.levels]]\nrole = "regional_manager"\nmax_excess = "10,000.50"\n'
        "max_overdue = 0.1\n"
        '[[approvals.levels]]\nrole = "finance"\nmax_excess = 20000\nmax_overdue = 0.3\n'
        '[[approvals.levels]]\nrole = "executive"\n',
    )
    matrix = settings.approvals.matrix
    assert matrix.chain is True
    assert matrix.levels == (
        AuthorityLevel("regional_manager", D("10000.50"), D("0.10")),
        AuthorityLevel("finance", D("20000.00"), D("0.30")),  # 0.3, not 0.299999…
        AuthorityLevel("executive", None, None),
    )


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        (
            '[[approvals.levels]]\nrole = "credit_manager"\nmax_excess = 200000\n'
            '[[approvals.levels]]\nrole = "executive"\nmax_excess = 50000\n',
            "approvals.levels",
            "max_excess must not decrease",
        ),
        (
            '[[approvals.levels]]\nrole = "credit_manager"\nmax_excess = 200000\n',
            "approvals.levels",
            "must have no caps",
        ),
        (
            '[[approvals.levels]]\nrole = "executive"\n[[approvals.levels]]\nrole = "executive"\n',
            "approvals.levels",
            "more than once",
        ),
        ("[approvals]\nlevels = []\n", "approvals.levels", "at least one level"),
        ('[[approvals.levels]]\nrole = "rep"\n', "approvals.levels.0.role", "a rep never"),
        ('[[approvals.levels]]\nrole = "boss"\n', "approvals.levels.0.role", "unknown approver"),
        (
            '[[approvals.levels]]\nrole = "executive"\nmax_excess = "1.001"\n',
            "approvals.levels.0.max_excess",
            "more than two decimals",
        ),
        (
            '[[approvals.levels]]\nrole = "executive"\nmax_overdue = -5\n',
            "approvals.levels.0.max_overdue",
            "must not be negative",
        ),
        (
            "[approvals]\nescalate_after_hours = 24\nexpire_after_hours = 24\n",
            "approvals",
            "expire_after_hours must be greater than escalate_after_hours",
        ),
        ("[approvals]\nremind_after_hours = 0\n", "approvals.remind_after_hours", "greater than 0"),
        ('[api]\nauth = "basic"\n', "api.auth", "'api_key' or 'hmac'"),
    ],
)
def test_bad_approval_and_api_settings_name_the_key(tmp_path, _clean_env, toml, key, reason):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, toml)
    message = str(info.value)
    assert f"  {key}: " in message
    assert reason in message


@pytest.mark.parametrize(
    ("toml", "key", "secret"),
    [
        ('[api]\napi_keys = ["good-key-8f14e45fceea", "changeme"]\n', "api.api_keys.1", "changeme"),
        ('[api]\nhmac_secret = "your-secret"\n', "api.hmac_secret", "your-secret"),
        ('[api]\ncallback_secret = "CHANGE_ME"\n', "api.callback_secret", "CHANGE_ME"),
    ],
)
def test_placeholder_api_secrets_are_refused_without_echoing_them(
    tmp_path, _clean_env, toml, key, secret
):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, toml)
    message = str(info.value)
    assert f"  {key}: looks like a placeholder" in message
    assert secret not in message


def test_hmac_auth_needs_its_secret(tmp_path, _clean_env, monkeypatch):
    with pytest.raises(ConfigError, match=r'api\.hmac_secret: required because api\.auth = "hmac"'):
        _load(tmp_path, '[api]\nauth = "hmac"\n')
    monkeypatch.setenv("CREDITBOT_API__HMAC_SECRET", "3a7bd3e2360a3d29eea436fcfb7e44c7")
    settings = _load(tmp_path, '[api]\nauth = "hmac"\n')
    assert settings.api.hmac_secret.get_secret_value() == "3a7bd3e2360a3d29eea436fcfb7e44c7"
    assert "3a7bd3e2" not in repr(settings)


def test_api_keys_come_from_the_environment_as_a_json_list(tmp_path, _clean_env, monkeypatch):
    keys = '["erp-key-8f14e45fceea", "erp-key-c9f0f895fb98"]'
    monkeypatch.setenv("CREDITBOT_API__API_KEYS", keys)
    settings = _load(tmp_path, "")
    assert [k.get_secret_value() for k in settings.api.api_keys] == [
        "erp-key-8f14e45fceea",
        "erp-key-c9f0f895fb98",
    ]
    assert "erp-key" not in repr(settings)
