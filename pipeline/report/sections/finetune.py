"""Fine-tuning: per tuned model its method, trainable parameters, losses, held-out exact match
before and after, DPO reward accuracy and margins, reward-model accuracy, the RL reward
curve and refusal rates; then the evaluate steps' exact match on the generated chat tasks,
one row per evaluated model (base and tuned side by side)."""
from pipeline.report.blocks import Heading, Para, Table, figure


def _mean(d: dict | None):
    return round(sum(d.values()) / len(d), 3) if d else None


def _row(label, d, s):
    em = s.get("heldout_exact_match") or {}
    pref = s.get("heldout_preference_accuracy") or {}
    refusal = s.get("refusal_rate") or {}
    own = s.get("heldout_own_mistakes") or {}
    return [label, s.get("method"), s.get("trainable_params"), s.get("params"), s.get("steps"),
            s.get("final_train_loss"), (s.get("final_validation") or {}).get("val_loss"),
            _mean(em.get("before")), _mean(em.get("after")),
            f"{pref['before']:.3f} -> {pref['after']:.3f}" if pref else None,
            f"{own['before']:.3f} -> {own['after']:.3f} ({own['pairs']} pairs)" if own.get("pairs") else None,
            s.get("heldout_reward_accuracy"), s.get("heldout_reward_margin"), s.get("heldout_accuracy"),
            f"{refusal['before']['harmful']:.2f} -> {refusal['after']['harmful']:.2f}" if refusal else None,
            f"{refusal['before']['harmless']:.2f} -> {refusal['after']['harmless']:.2f}" if refusal else None,
            sum((s.get("dropped") or {}).values())]


def _pref(s, task):
    """A DPO step's held-out preference accuracy on one task, before -> after."""
    t = (s.get("heldout_preference_accuracy_by_task") or {}).get(task)
    return f"{t['before']:.2f} -> {t['after']:.2f}" if t and t["pairs"] else None


def _reward_chart(curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, curve in curves:
        ax.plot(*zip(*curve), lw=1.2, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward of sampled replies")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("RL reward")
    return fig


def _chat_task_table(ctx):
    """Exact match of every evaluate step on the generated chat_* tasks, labelled by the model it read."""
    rows, tasks = [], []
    for label, d in ctx.stage_dirs("evaluate"):
        results = ctx.stats(d).get("results", {})
        chat = {name: r["metrics"] for name, r in results.items() if name.startswith("chat_")}
        if not chat:
            continue
        tasks = tasks or sorted(chat)
        model = (ctx.stats(d).get("inputs") or {}).get("model", "?")
        ems = [next((v for k, v in chat.get(t, {}).items() if k.startswith("exact_match")), None) for t in tasks]
        rows.append([label, model, *ems])
    if not rows:
        return []
    return [Heading("Generated chat tasks, evaluated with the chat template", 3),
            Para("Zero-shot, greedy, exact match on the reply (pipeline/core/tasks/yaml/chat_*.yaml: held-out "
                 "problems never trained on). One row per evaluate step; `model` is the step/key it scored."),
            Table(["evaluate step", "model", *[t.removeprefix("chat_") for t in tasks]], rows)]


def render(ctx):
    runs = ctx.stage_dirs("finetune")
    if not runs:
        return []
    blocks = [Heading("Fine-tuning"), Para(
        "Each step tunes its input model with one method. Exact match is the mean over the generated "
        "tasks' held-out problems, greedy replies, before (the input model) and after. Preference accuracy: "
        "how often log p(chosen) > log p(rejected) on held-out pairs; 'vs own mistakes': the same, with the "
        "input model's own wrong greedy replies as the rejected ones; DPO reward accuracy and margin use "
        "its implicit reward beta * log(pi / pi_start). Refusal rates are on held-out harmful requests (want "
        "1) and harmless look-alikes (want 0).")]
    rows = [_row(label, d, ctx.stats(d)) for label, d in runs]
    blocks.append(Table(["step", "method", "trainable", "params", "steps", "final train loss", "val loss",
                         "EM before", "EM after", "pref. acc.", "pref. acc. vs own mistakes", "DPO reward acc.", "DPO margin",
                         "RM acc.", "refusal harmful", "refusal look-alike", "set aside"], rows))
    per_task = []
    for label, d in runs:
        s = ctx.stats(d)
        em = s.get("heldout_exact_match") or {"before": {}, "after": {}}
        # the generated tasks, then groups with preferences only (the safety pairs: no exact match)
        groups = list(em["after"]) + [g for g in s.get("heldout_preference_accuracy_by_task") or {} if g not in em["after"]]
        per_task += [[label, g, em["before"].get(g), em["after"].get(g), _pref(s, g)] for g in groups]
    if per_task:
        blocks.append(Table(["step", "task", "EM before", "EM after", "pref. acc."], per_task))
    curves = [(label, ctx.stats(d)["reward_curve"]) for label, d in runs if ctx.stats(d).get("reward_curve")]
    if curves:
        blocks.append(figure(_reward_chart(curves), "Mean reward of the sampled replies per step", "finetune-rl.png"))
    return blocks + _chat_task_table(ctx)
