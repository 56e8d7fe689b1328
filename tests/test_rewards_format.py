from qwengrpo.rewards import think_answer_format, think_answer_format_strict, verdict_format, verdict_label


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_think_answer_format():
    cases = [
        ("<think>look at frame 3</think> <answer>(1) open door</answer>", 1.0),  # Video-R1's format
        ("<think>\nmulti\nline\n</think>\n<answer>\nA\n</answer>\n", 1.0),  # new lines inside and between blocks
        ("<answer>A</answer> <think>why</think>", 0.6),  # both blocks, wrong order
        ("<think>why</think>", 0.3),  # think only
        ("<answer>A</answer>", 0.3),  # answer only
        ("<think></think><answer>A</answer>", 0.3),  # empty think block earns nothing (nor the order)
        ("<think>a</think><think>b</think><answer>A</answer>", 0.3),  # repeated think tags
        ("<think>a</think><answer>A</answer><answer>B</answer>", 0.3),  # repeated answer tags
        ("<think>a <answer>A</answer></think>", 0.6),  # answer nested in think: no order credit
        ("<think>a</think> <answer>A", 0.3),  # truncated answer
        ("", 0.0),  # empty completion
        ("A", 0.0),  # bare answer
    ]
    completions, expected = zip(*cases, strict=True)
    assert think_answer_format(list(completions)) == list(expected)


def test_think_answer_format_strict():
    cases = [
        ("<think>look</think> <answer>A</answer>", 1.0),  # well formed
        ("  <think>look</think>\n\n<answer>A</answer>\n", 1.0),  # surrounding whitespace is fine
        ("Sure! <think>look</think><answer>A</answer>", 0.0),  # text before
        ("<think>look</think><answer>A</answer> done", 0.0),  # text after
        ("<think>look</think> so <answer>A</answer>", 0.0),  # text between
        ("<think>look</think><answer> </answer>", 0.0),  # blank answer
        ("<think>a</think><answer>A</answer><answer>A</answer>", 0.0),  # repeated answer
        ("<answer>A</answer>", 0.0),  # think missing
        ("<think>" * 5000 + "</think><answer>A</answer>", 0.0),  # tag spam
    ]
    completions, expected = zip(*cases, strict=True)
    assert think_answer_format_strict(list(completions)) == list(expected)


def test_format_rewards_read_conversational_and_plain_alike():
    texts = ["<think>x</think><answer>A</answer>", "<answer>A</answer>", "通过\n理由: ok"]
    rewards = (think_answer_format, think_answer_format_strict, verdict_format)
    assert [f(texts) for f in rewards] == [f([chat(t) for t in texts]) for f in rewards]


def test_verdict_label():
    cases = [
        ("通过\n理由: 接地线完好", "通过", 1.0),  # correct pass
        ("不通过\n理由: 缺少挡风板", "不通过", 1.0),  # correct fail
        ("不通过\n理由: 缺少挡风板", "通过", 0.0),  # wrong verdict
        ("通过", "通过", 1.0),  # verdict alone still matches the label (format is a separate reward)
        ("  通过  \n理由: 好", "通过", 1.0),  # surrounding whitespace on line 1
        ("可能通过\n理由: 不确定", "通过", 0.0),  # not a verdict token
        ("通过。\n理由: 好", "通过", 0.0),  # trailing punctuation is not the token
        ("通过 不通过\n理由: 好", "通过", 0.0),  # both tokens
        ("理由: 好\n通过", "通过", 0.0),  # verdict not on line 1
        ("", "不通过", 0.0),  # empty
        ("<think>看图</think>通过\n理由: 好", "通过", 1.0),  # a think block is skipped
        ("通过\n理由: 好", "pass", 1.0),  # English gold alias
        ("不通过\n理由: 坏", False, 1.0),  # boolean gold (False = 不通过)
        ("通过\n理由: 好", "maybe", None),  # unparsable gold → skipped
        ("通过\n理由: 好", None, None),  # missing gold value → skipped
    ]
    completions, labels, expected = zip(*cases, strict=True)
    assert verdict_label(list(completions), label=list(labels)) == list(expected)


def test_verdict_format():
    cases = [
        ("通过\n理由: 接地线完好", 1.0),  # half-width colon
        ("不通过\n理由：挡风板缺失", 1.0),  # full-width colon
        ("通过  \n理由: 好  \n\n", 1.0),  # trailing whitespace on lines and at the end
        ("通过\r\n理由: 好", 1.0),  # Windows line ending
        ("通过", 0.0),  # one line
        ("通过\n理由: 好\n补充说明", 0.0),  # three lines
        ("通过\n\n理由: 好", 0.0),  # blank line in between makes three lines
        ("通过 不通过\n理由: 好", 0.0),  # extra token on line 1
        ("结论: 通过\n理由: 好", 0.0),  # extra text on line 1
        (" 通过\n理由: 好", 0.0),  # leading whitespace on line 1
        ("通过\n原因: 好", 0.0),  # wrong prefix
        ("通过\n理由:", 0.0),  # empty reason
        ("通过\n 理由: 好", 0.0),  # line 2 must start with the prefix
        ("", 0.0),  # empty
    ]
    completions, expected = zip(*cases, strict=True)
    assert verdict_format(list(completions)) == list(expected)


def test_verdict_label_logs_unparsable_gold_count():
    logged = []
    verdict_label(["通过", "通过", "通过"], label=["通过", "?", 3], log_metric=lambda k, v: logged.append((k, v)))
    assert logged == [("verdict_label/unparsable_gold", 2.0)]
