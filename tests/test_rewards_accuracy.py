import pytest

from qwengrpo.rewards import AnswerAccuracy, FormatGate, get_reward, get_rewards, think_answer_format


def score(mode: str, cases: list[tuple], **params) -> list[float | None]:
    completions, golds = [c[0] for c in cases], [c[1] for c in cases]
    return AnswerAccuracy(mode=mode, **params)(completions, solution=golds)


def expected(cases: list[tuple]) -> list[float | None]:
    return [c[2] for c in cases]


def test_exact():
    cases = [
        ("<answer>Paris</answer>", "paris", 1.0),  # case-insensitive
        ("<answer>  the   Eiffel tower. </answer>", "The Eiffel Tower", 1.0),  # whitespace and end punctuation
        ("<think>maybe Rome</think><answer>Paris</answer>", "Paris", 1.0),  # think text ignored
        ("<think>x</think> Paris", "Paris", 1.0),  # no answer tags: text after </think>
        ("Paris", ["paris", "Paris, France"], 1.0),  # any of several golds
        ("<answer>ＰＡＲＩＳ</answer>", "Paris", 1.0),  # full-width letters (NFKC)
        ("<answer>Paris France</answer>", "Paris", 0.0),  # extra words
        ("<answer>Rome</answer><answer>Paris</answer>", "Paris", 1.0),  # the last answer block counts
        ("<answer>Paris", "Paris", 0.0),  # unclosed answer tag
        ("<answer></answer>", "Paris", 0.0),  # empty answer
        ("Paris", 42, 0.0),  # numeric gold compared as text
        ("Paris", "", None),  # empty gold → skipped
        ("Paris", None, None),  # missing gold → skipped
    ]
    assert score("exact", cases) == expected(cases)


def test_choice():
    cases = [
        ("<answer>B</answer>", "B", 1.0),  # bare letter
        ("<answer>(b)</answer>", "B", 1.0),  # bracketed, lower case
        ("<answer>**B**</answer>", "B", 1.0),  # markdown bold
        ("<answer>B. a red car</answer>", "(B) a red car", 1.0),  # letter with option text
        ("<answer>The answer is C</answer>", "C", 1.0),  # phrase
        ("<answer>Answer: (D)</answer>", "D", 1.0),  # phrase with brackets
        ("<answer>A</answer>", "B", 0.0),  # wrong letter
        ("<answer>A dog</answer>", "A", 0.0),  # a word starting with a capital is not a choice
        ("<answer>(A) or (B)</answer>", "A", 0.0),  # hedging over several letters
        ("<answer>a red car</answer>", "B", 0.0),  # option text without its letter
        ("", "B", 0.0),  # empty
        ("<answer>B</answer>", "red car", None),  # gold without a letter → skipped
    ]
    assert score("choice", cases) == expected(cases)


def test_numeric():
    cases = [
        ("<answer>42</answer>", "42", 1.0),  # integer
        ("<answer>42.0</answer>", 42, 1.0),  # float vs int gold
        ("<answer>1,234</answer>", "1234", 1.0),  # thousands separator
        ("<answer>about 3.5 meters</answer>", "3.5 m", 1.0),  # units around the number
        ("<answer>first 7, then 9</answer>", "9", 1.0),  # the last number counts
        ("<answer>-2e3</answer>", "-2000", 1.0),  # scientific notation
        ("<answer>99.5</answer>", "100", 0.0),  # outside the default (float-noise) tolerance
        ("<answer>forty-two</answer>", "42", 0.0),  # no digits
        ("<answer>" + "9" * 5000 + "</answer>", "42", 0.0),  # overflows to inf
        ("<answer>42</answer>", "n/a", None),  # unparsable gold
    ]
    assert score("numeric", cases) == expected(cases)


def test_numeric_tolerance():
    cases = [
        ("<answer>99.5</answer>", "100", 1.0),  # within 1 %
        ("<answer>98</answer>", "100", 0.0),  # outside 1 %
        ("<answer>0.004</answer>", "0", 1.0),  # within the absolute tolerance near zero
    ]
    assert score("numeric", cases, rel_tol=0.01, abs_tol=0.005) == expected(cases)


def test_set_iou():
    gold = "(1) Open door (2) Pick up cup (3) Pour water"
    cases = [
        ("<answer>(1) open door (2) pick up cup (3) pour water</answer>", gold, 1.0),  # exact
        ("<answer>(1) Pour water (2) Open door (3) Pick up cup</answer>", gold, 1.0),  # order does not matter
        ("<answer>open door, pick up cup; pour water</answer>", gold, 1.0),  # commas and semicolons
        ("<answer>1. open door\n2. pick up cup\n3. pour water</answer>", gold, 1.0),  # numbered lines
        ("<answer>(1) open door (2) pick up cup</answer>", gold, 2 / 3),  # subset
        ("<answer>(1) open door (2) wash hands</answer>", gold, 1 / 4),  # 1 shared of 4 distinct
        ("<answer>open door, open door, open door</answer>", gold, 1 / 3),  # duplicates collapse
        ("<answer>(1) sit (2) stand</answer>", gold, 0.0),  # disjoint
        ("<answer>(1) (2) ,,;</answer>", gold, 0.0),  # enumerators only
        ("<answer>打开门、拿起杯子</answer>", ["打开门", "拿起杯子"], 1.0),  # list gold, Chinese separator
        ("<answer>open door</answer>", "", None),  # empty gold → skipped
    ]
    assert score("set_iou", cases) == pytest.approx(expected(cases))


def test_anls():
    cases = [
        ("<answer>INVOICE 2024</answer>", "invoice 2024", 1.0),  # case-insensitive
        ("<answer>lnvoice 2024</answer>", "invoice 2024", 1 - 1 / 12),  # one OCR slip in 12 characters
        ("<answer>receipt</answer>", "invoice 2024", 0.0),  # distance above the 0.5 threshold
        ("<answer>invoice</answer>", ["total", "invoice"], 1.0),  # best over several golds
        ("<answer>" + "x" * 100_000 + "</answer>", "invoice", 0.0),  # spam is cut short by length
        ("<answer></answer>", "invoice", 0.0),  # empty answer
        ("<answer>invoice</answer>", [], None),  # no gold → skipped
    ]
    assert score("anls", cases) == pytest.approx(expected(cases))


def test_math_wraps_trl_accuracy_reward():
    cases = [
        ("<answer>\\frac{1}{3}</answer>", "$\\frac{1}{3}$", 1.0),  # unboxed LaTeX inside answer tags
        ("<answer>1/3</answer>", "$\\frac{1}{3}$", 1.0),  # plain fraction
        ("<answer>0.5</answer>", "$\\frac{1}{2}$", 1.0),  # equivalent value
        ("<think>x</think> so \\boxed{3}", "3", 1.0),  # no tags: boxed answer after </think>
        ("<answer>2</answer>", "3", 0.0),  # wrong
        ("<answer>" + "(" * 2000 + "</answer>", "3", 0.0),  # spam is not parsed
        ("<answer>3</answer>", "not math at all", None),  # unparsable gold → skipped
    ]
    assert score("math", cases) == expected(cases)


def test_accuracy_reads_conversational_completions():
    completions = [[{"role": "assistant", "content": "<answer>B</answer>"}], "<answer>B</answer>"]
    assert AnswerAccuracy(mode="choice")(completions, solution=["B", "B"]) == [1.0, 1.0]


def test_accuracy_logs_unparsable_gold_count():
    logged = []
    AnswerAccuracy(mode="numeric")(["1", "2"], solution=["1", "x"], log_metric=lambda k, v: logged.append((k, v)))
    assert logged == [("answer_accuracy_numeric/unparsable_gold", 1.0)]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        AnswerAccuracy(mode="fuzzy")


def test_format_gate():
    gate = FormatGate(AnswerAccuracy(mode="set_iou"))
    cases = [
        ("<think>see</think><answer>a, b</answer>", "a, b", 1.0),  # well formed and right
        ("<think>see</think><answer>a</answer>", "a, b", 0.5),  # well formed, partly right
        ("<answer>a, b</answer>", "a, b", 0.0),  # right but no think block
        ("a, b", "a, b", 0.0),  # right but no tags at all
        ("<think>see</think><answer>a, b</answer><answer>a, b</answer>", "a, b", 0.0),  # tag spam
        ("<think>see</think><answer>a</answer>", "", None),  # unparsable gold stays None
    ]
    completions, golds = [c[0] for c in cases], [c[1] for c in cases]
    assert gate(completions, solution=golds) == expected(cases)


def test_format_gate_with_partial_format_threshold():
    gate = FormatGate(AnswerAccuracy(mode="choice"), format_reward=think_answer_format, threshold=0.6)
    completions = ["<answer>B</answer><think>x</think>", "<answer>B</answer>"]  # format scores 0.6 and 0.3
    assert gate(completions, solution=["B", "B"]) == [1.0, 0.0]


def test_format_gate_takes_inner_columns_and_name():
    gate = get_reward("format_gate", reward={"name": "answer_accuracy", "mode": "exact", "column": "answer"})
    assert (gate.__name__, gate.columns) == ("gated_answer_accuracy_exact", ("answer",))


def test_gold_in_answer_tags_reads_as_its_answer():
    # The video system's gold answers are written in the answer format; the reward compares their content.
    (reward,) = get_rewards([{"name": "answer_accuracy", "mode": "set_iou"}])
    golds = ["<answer>(1) Open door (2) Pick cup</answer>"] * 3 + ["(1) open door (2) pick cup"]
    completions = ["<answer>(1) open door (2) pick cup</answer>", "<answer>open door</answer>", "", "open door"]
    assert reward(completions, solution=golds) == [1.0, 0.5, 0.0, 0.5]
