"""The papers' findings, measured on this run: for each paper, its claim, the paper's number, ours, and whether the
relation holds here.

Every number of ours comes from the run's fitted directions (``directions/<entry>/``) and their held-out evaluation
(``metrics/<entry>.details.json``); the papers' numbers are transcribed from their tables (:data:`PAPER_TABLES`).
A relation is judged by a rule fixed in this module before any run (the ``verdict`` of each :class:`Finding` says
which), never tuned to make a claim hold; a relation that fails here is reported as failing, with the reasons it may
(different GAN, labelers, scale) in its note.

Papers (cited by title and authors):

- Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using Supervised Learning":
  the orthogonality penalty's cosine table (Table III) and re-scoring of one attribute's edit (Table II), from a
  λ = 0 ``ortho-linear`` entry beside a λ > 0 one (``fit.variants``).
- Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing" (InterFaceGAN):
  boundary validation accuracy, boundary cosines against the labels' correlation, conditional manipulation.
- Mao, Lou & Yuan, "TunaGAN: Interpretable GAN for Smart Editing": separability score (Table 1), nonlinear vs
  linear and W vs Z, and nonlinear (gradient-path) edits against linear ones.
- Lu, Lee, Tseng & Yang, "Unsupervised Discovery of Disentangled Manifolds in GANs": RCA and PPL of the centroid
  method against the baseline of Voynov & Babenko, "Unsupervised Discovery of Interpretable Directions in the GAN
  Latent Space" (Table 1).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stages.latent.directions import DirectionSet

PHAM_VAN = ('Pham Van et al., "Interpreting the Latent Space of Generative Adversarial Networks using Supervised '
            'Learning"')
INTERFACEGAN = 'Shen, Gu, Tang & Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing" (InterFaceGAN)'
TUNAGAN = 'Mao, Lou & Yuan, "TunaGAN: Interpretable GAN for Smart Editing"'
LU = 'Lu, Lee, Tseng & Yang, "Unsupervised Discovery of Disentangled Manifolds in GANs"'

#: Transcribed from the papers (inputs to the comparison, not results of ours).
PAPER_TABLES: dict[str, pd.DataFrame] = {
    # Pham Van et al., Table III: cos(Young, attribute) without / with the penalty (λ = 2).
    "pham_van_table_iii": pd.DataFrame(
        {"without": [0.859559, 0.795307, 0.791769, 0.599438, 0.542247, 0.513396, 0.453567, 0.430066, 0.413676,
                     -0.786877, -0.769961, -0.754783, -0.749704, -0.734693, -0.669467, -0.585021, -0.523914,
                     -0.495711],
         "with": [0.313507, -0.002151, 0.282624, 0.262185, -0.000376, 0.042719, -0.017463, 0.036656, 0.022878,
                  0.019917, 0.039103, 0.015170, 0.014643, 0.034192, 0.038437, 0.042678, 0.009939, 0.038485]},
        index=["Attractive", "HeavyMakeup", "Lipstick", "NoBeard", "BigLips", "ArchedEyebrows", "OvalFace",
               "WavyHair", "PointyNose", "DoubleChin", "Male", "BagsUnderEyes", "GrayHair", "BigNose", "WearingTie",
               "Bald", "RecedingHairline", "Goatee"]),
    # Pham Van et al., Table II: increasing Young; abs. change of the other attributes' classifier scores.
    "pham_van_table_ii": pd.DataFrame(
        {"abs_diff_no_reg": [0.999401, 0.998050, 0.997815, 0.783849, 0.754571, 0.752356, 0.688344, 0.676984,
                             0.607690, 0.541111, 0.539525, 0.374099, 0.324246],
         "abs_diff_reg": [0.002541, 0.007879, 0.012769, 0.058051, 0.110794, 0.071713, 0.015950, 0.107190, 0.194136,
                          0.290538, 0.011577, 0.024169, 0.095482]},
        index=["Male", "Makeup", "Lipstick", "Earrings", "BagsUnderEyes", "WavyHair", "5oClockShadow", "BigNose",
               "OvalFace", "DoubleChin", "BushyEyebrows", "ArchedEyebrows", "NarrowEyes"]),
    # InterFaceGAN (PGGAN on CelebA-HQ): boundary cosines and the labels' Pearson correlation (upper triangles).
    "interfacegan_cosines": pd.DataFrame(
        {"cosine": [-0.04, -0.06, -0.05, -0.04, 0.04, -0.10, -0.05, 0.49, 0.38, 0.52],
         "pearson": [-0.01, -0.01, -0.02, 0.00, 0.02, -0.08, -0.01, 0.42, 0.35, 0.47]},
        index=["pose/smile", "pose/age", "pose/gender", "pose/glasses", "smile/age", "smile/gender", "smile/glasses",
               "age/gender", "age/glasses", "gender/glasses"]),
    # TunaGAN, Table 1: separability score exp(H(Y|Ŷ)) (lower = more separable).
    "tunagan_table_1": pd.DataFrame(
        {"Gender": [2.2057, 1.8984, 1.6361, 1.3079], "Beard": [1.3243, 1.2921, 1.0979, 1.1335],
         "Glasses": [1.8572, 1.5709, 1.3946, 1.1384], "Overall": [5.4249, 3.8533, 2.5051, 1.6877]},
        index=["linear z", "linear w", "nonlinear z", "nonlinear w"]),
    # Lu et al., Table 1: RCA (↑) and PPL (↓); the baseline is Voynov & Babenko's method.
    "lu_table_1": pd.DataFrame(
        {"Anime RCA": [0.77, 0.80, 0.78], "Anime PPL": [179.23, 175.32, 99.78],
         "ILSVRC RCA": [0.84, 0.86, 0.85], "ILSVRC PPL": [207.35, 191.34, 185.23],
         "FFHQ RCA": [0.84, 0.83, 0.82], "FFHQ PPL": [412.40, 408.75, 402.64]},
        index=["baseline (Voynov & Babenko)", "w/o centroid loss", "with centroid loss (Lu et al.)"]),
}

#: Fixed rules (see each finding): InterFaceGAN's accuracy bars; the largest |cos − ρ| gap we still call "mirrors"
#: (the paper's largest is 0.07); the RCA drop we still call "competitive" (the paper's largest is 0.02).
VAL_ACCURACY_BAR, ENTIRE_ACCURACY_BAR = 0.95, 0.75
COSINE_GAP_BAR = 0.10
RCA_DROP_BAR = 0.03


@dataclass(frozen=True)
class Entry:
    """One fitted and evaluated directions set: its name, the method that fitted it, its directions and its
    evaluation details (``metrics/<name>.details.json``)."""

    name: str
    base_method: str
    directions: DirectionSet
    details: dict[str, Any]

    @property
    def fit_params(self) -> dict[str, Any]:
        return self.directions.meta.get("params", {})


@dataclass(frozen=True)
class Finding:
    """One claim of a paper and our measurement. ``verdict``: ``yes`` (the relation holds here), ``no``, ``partly``
    (for some attributes / pairs only) or ``n/a`` (not measurable on this run; the note says what it needs)."""

    claim: str
    paper: str
    ours: str
    verdict: str
    note: str = ""


@dataclass
class PaperSection:
    """A paper's reproduction: tables (title → DataFrame) and findings."""

    paper: str
    summary: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _verdict(flags: list[bool]) -> str:
    if not flags:
        return "n/a"
    return "yes" if all(flags) else "no" if not any(flags) else "partly"


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _missing(claim: str, paper: str, needs: str) -> Finding:
    return Finding(claim=claim, paper=paper, ours="not measured", verdict="n/a", note=needs)


def _by_base(entries: dict[str, Entry], *bases: str) -> list[Entry]:
    return [entry for entry in entries.values() if entry.base_method in bases]


def _std_change(entry: Entry, attribute: str, other: str, mode: str) -> float | None:
    """Mean |change| of ``other`` when editing ``attribute`` at ±α_max, in held-out std of ``other``."""
    record = entry.details["directions"].get(attribute, {})
    table = record.get("table_ii" if mode == "plain" else "conditional_table_ii", {})
    spread = entry.details.get("spread", {}).get(other)
    if other not in table or not spread:
        return None
    return float(table[other]["mean_abs_change"]) / float(spread)


# ------------------------------------------------------------------------------------------------ Pham Van et al.


def ortho_linear_section(entries: dict[str, Entry], reference: str | None) -> PaperSection:
    """Table III (cosines with the reference attribute at λ = 0 and λ > 0), Table II (re-scoring the reference's
    edit on every other attribute) and the fit (R²) of both."""
    section = PaperSection(PHAM_VAN, "A linear map z → attributes with an orthogonality penalty (λ = 2) on its rows; "
                                     "directions are the normalised rows.")
    ortho = _by_base(entries, "ortho-linear")
    baselines = [e for e in ortho if float(e.fit_params.get("lam", -1)) == 0.0]
    regularised = [e for e in ortho if float(e.fit_params.get("lam", 0)) > 0.0]
    paper_iii, paper_ii = PAPER_TABLES["pham_van_table_iii"], PAPER_TABLES["pham_van_table_ii"]
    paper_cos = (f"mean |cos(Young, ·)| {paper_iii['without'].abs().mean():.2f} → {paper_iii['with'].abs().mean():.2f} "
                 f"({len(paper_iii)} attributes)")
    paper_change = (f"mean |Δscore| of {len(paper_ii)} other attributes {paper_ii['abs_diff_no_reg'].mean():.2f} → "
                    f"{paper_ii['abs_diff_reg'].mean():.2f} when increasing Young")
    claims = ("The penalty makes an attribute's direction much less similar to the others' (Table III: at least "
              "halves the mean |cos| here)",
              "With the penalty, editing that attribute changes the others less (Table II)",
              "The regularised direction still edits its own attribute (Table II: Young 0.61 → 0.90)")
    if not baselines or not regularised:
        needs = ("needs an ortho-linear entry with lam: 0 beside one with lam > 0, e.g. fit.variants: "
                 "{ortho-linear-noreg: {method: ortho-linear, lam: 0.0}}")
        section.findings = [_missing(claims[0], paper_cos, needs), _missing(claims[1], paper_change, needs),
                            _missing(claims[2], "Young 0.61 → 0.99 (λ = 0), 0.90 (λ = 2)", needs)]
        return section
    base, reg = baselines[0], regularised[0]
    base_label, reg_label = f"λ={float(base.fit_params['lam']):g} ({base.name})", \
        f"λ={float(reg.fit_params['lam']):g} ({reg.name})"
    common = [n for n in base.directions.names if n in reg.directions.names]
    evaluated = [a for a in base.details["directions"] if a in reg.details["directions"] and a in common]
    ref = reference if reference in evaluated else (evaluated[0] if evaluated else None)
    if ref is None:
        section.findings = [_missing(c, paper_cos, "the two entries share no evaluated attribute") for c in claims]
        return section
    cos_base = pd.DataFrame(base.directions.cosine_similarity(), index=base.directions.names,
                            columns=base.directions.names).loc[common, common]
    cos_reg = pd.DataFrame(reg.directions.cosine_similarity(), index=reg.directions.names,
                           columns=reg.directions.names).loc[common, common]
    others = [n for n in common if n != ref]
    table_iii = pd.DataFrame({base_label: cos_base.loc[ref, others], reg_label: cos_reg.loc[ref, others]})
    table_iii = table_iii.sort_values(base_label, ascending=False)
    off = ~np.eye(len(common), dtype=bool)
    table_iii.loc["mean |cos| (these rows)"] = table_iii.abs().mean()
    table_iii.loc["mean |cos| (all pairs)"] = [np.abs(cos_base.to_numpy()[off]).mean(),
                                               np.abs(cos_reg.to_numpy()[off]).mean()]
    section.tables.append((f"Table III: cosine between {ref!r} and every other direction", table_iii))

    rows = {}
    for other, cell in base.details["directions"][ref].get("table_ii", {}).items():
        reg_cell = reg.details["directions"][ref].get("table_ii", {}).get(other)
        if reg_cell is None:
            continue
        rows[other] = {"original": cell["original"], f"edited, {base_label}": cell["edited_plus"],
                       f"|Δ|, {base_label}": cell["mean_abs_change"], f"edited, {reg_label}": reg_cell["edited_plus"],
                       f"|Δ|, {reg_label}": reg_cell["mean_abs_change"]}
    table_ii = pd.DataFrame.from_dict(rows, orient="index").sort_values(f"|Δ|, {base_label}", ascending=False)
    section.tables.append((f"Table II: editing {ref!r} (+α_max), re-labeled scores of the other attributes; |Δ| = "
                           f"mean over held-out samples of |edited − original| at ±α_max, in each attribute's units",
                           table_ii))
    fit = pd.DataFrame({f"R² train, {base_label}": {a: base.directions.stats[a].get("r2_train") for a in common},
                        f"R² held-out, {base_label}": {a: base.directions.stats[a].get("r2_val") for a in common},
                        f"R² train, {reg_label}": {a: reg.directions.stats[a].get("r2_train") for a in common},
                        f"R² held-out, {reg_label}": {a: reg.directions.stats[a].get("r2_val") for a in common}},
                       dtype=float)
    section.tables.append(("Fit of the linear map (R², original units; the paper reports none)", fit))

    mean_base, mean_reg = table_iii.loc["mean |cos| (these rows)"]
    entangle_base = base.details["directions"][ref].get("entanglement")
    entangle_reg = reg.details["directions"][ref].get("entanglement")
    effect_base = base.details["directions"][ref].get("slope_std")
    effect_reg = reg.details["directions"][ref].get("slope_std")
    scale_note = ("The paper: PGGAN (z ∈ R⁵¹²), 40 CelebA attributes from one ResNet classifier, N = 3000; ours: "
                  "this run's generator and labelers (see above), fewer attributes, fewer of them correlated.")
    section.findings = [
        Finding(claims[0], paper_cos, f"mean |cos({ref}, ·)| {mean_base:.2f} → {mean_reg:.2f} ({len(others)} attributes)",
                "yes" if mean_reg <= mean_base / 2 else "partly" if mean_reg < mean_base else "no",
                scale_note + " Little to remove when the λ = 0 cosines are already small."),
        Finding(claims[1], paper_change,
                f"entanglement (mean |Δ| of the others, held-out std units) {_fmt(entangle_base)} → "
                f"{_fmt(entangle_reg)}",
                _verdict([entangle_reg < entangle_base]) if entangle_base is not None and entangle_reg is not None
                else "n/a",
                "Measured by re-labeling real edits of held-out latents (the paper: one image). " + scale_note),
        Finding(claims[2], "Young 0.61 → 0.99 (λ = 0), 0.90 (λ = 2)",
                f"effect on {ref} (held-out std per unit α) {_fmt(effect_base)} (λ = 0), {_fmt(effect_reg)} (λ > 0)",
                _verdict([effect_reg > 0]) if effect_reg is not None else "n/a",
                "A direction that must turn away from correlated attributes loses part of its own effect."),
    ]
    return section


# ------------------------------------------------------------------------------------------------ InterFaceGAN


def interfacegan_section(entries: dict[str, Entry], label_correlation: pd.DataFrame) -> PaperSection:
    """Validation accuracy per attribute, boundary cosines against the labels' Pearson correlation, and conditional
    editing's effect on the conditioned attribute before and after projection."""
    section = PaperSection(INTERFACEGAN, "A linear SVM per attribute on the top/bottom 2 % of samples; the boundary's "
                                         "normal is the direction.")
    found = _by_base(entries, "interfacegan")
    claims = (f"Linear boundaries separate the attributes: > {VAL_ACCURACY_BAR:.0%} validation accuracy, "
              f"> {ENTIRE_ACCURACY_BAR:.0%} on the rest of the data",
              f"Boundary cosines mirror the attributes' correlation in the synthesized data (largest |cos − ρ| ≤ "
              f"{COSINE_GAP_BAR})",
              "Conditional manipulation holds the conditioned attribute (less change than the plain edit) while still "
              "editing the primal one")
    paper_pairs = PAPER_TABLES["interfacegan_cosines"]
    paper_gap = float((paper_pairs["cosine"] - paper_pairs["pearson"]).abs().max())
    paper_texts = ("> 95 % validation, > 75 % entire set, every attribute (PGGAN Z, StyleGAN W)",
                   f"largest |cos − ρ| {paper_gap:.2f} over {len(paper_pairs)} pairs (PGGAN)",
                   "qualitative: age conditioned on gender, eyeglasses on age and gender (PGGAN)")
    if not found:
        section.findings = [_missing(c, p, "needs an interfacegan entry in fit.methods or fit.variants")
                            for c, p in zip(claims, paper_texts)]
        return section
    entry = next((e for e in found if e.name == "interfacegan"), found[0])
    names = entry.directions.names
    accuracy = pd.DataFrame({"validation accuracy": {n: entry.directions.stats[n].get("val_accuracy") for n in names},
                             "rest-of-data accuracy": {n: entry.directions.stats[n].get("remaining_accuracy")
                                                       for n in names}}, dtype=float)
    section.tables.append((f"Separability of the boundaries ({entry.name}, space {entry.directions.space})", accuracy))
    passing = [bool(row["validation accuracy"] > VAL_ACCURACY_BAR and row["rest-of-data accuracy"] > ENTIRE_ACCURACY_BAR)
               for _, row in accuracy.iterrows()]
    failing = [n for n, ok in zip(names, passing) if not ok]
    section.findings.append(Finding(
        claims[0], paper_texts[0],
        "; ".join(f"{n} {_fmt(accuracy.loc[n, 'validation accuracy'])} / {_fmt(accuracy.loc[n, 'rest-of-data accuracy'])}"
                  for n in names),
        _verdict(passing),
        (f"Below the bars: {', '.join(failing)}. " if failing else "")
        + "The paper: PGGAN / StyleGAN at 1024 px with CelebA-trained attribute predictors; ours: this run's "
          "generator and labelers (the default: a 64-px DCGAN and small 64-px classifiers, whose scores are "
          "noisier), so an attribute may be encoded less linearly in z or labeled less reliably."))

    cosines = pd.DataFrame(entry.directions.cosine_similarity(), index=names, columns=names)
    section.tables.append((f"Boundary cosines ({entry.name})", cosines))
    labelled = [n for n in names if n in label_correlation.index]
    pairs = [(a, b) for i, a in enumerate(labelled) for b in labelled[i + 1:]]
    if pairs:
        comparison = pd.DataFrame({"cos(boundaries)": [cosines.loc[a, b] for a, b in pairs],
                                   "Pearson ρ(labels)": [label_correlation.loc[a, b] for a, b in pairs]},
                                  index=[f"{a}/{b}" for a, b in pairs])
        comparison["|cos − ρ|"] = (comparison["cos(boundaries)"] - comparison["Pearson ρ(labels)"]).abs()
        section.tables.append(("Boundary cosine against the labels' correlation, per pair", comparison))
        worst = comparison["|cos − ρ|"].idxmax()
        section.findings.append(Finding(
            claims[1], paper_texts[1],
            f"largest |cos − ρ| {comparison['|cos − ρ|'].max():.2f} ({worst}) over {len(pairs)} pairs; mean "
            f"{comparison['|cos − ρ|'].mean():.2f}",
            _verdict([bool(comparison["|cos − ρ|"].max() <= COSINE_GAP_BAR)]),
            "The boundary is fitted on the extremes only (top/bottom 2 %), ρ on all samples: for attributes that "
            "are nonlinear in z (pose angles, age in years) the two need not agree."))
    else:
        section.findings.append(_missing(claims[1], paper_texts[1], "no fitted attribute is among the labels"))

    conditions = entry.details.get("condition_on", [])
    rows, flags = {}, []
    for attribute, record in entry.details["directions"].items():
        for condition in conditions:
            if condition == attribute or "conditional_table_ii" not in record:
                continue
            plain, conditional = (_std_change(entry, attribute, condition, mode) for mode in ("plain", "conditional"))
            if plain is None or conditional is None:
                continue
            rows[f"edit {attribute}, hold {condition}"] = {
                "conditioned attribute's change, plain": plain,
                "conditioned attribute's change, conditional": conditional,
                "primal effect, plain": record.get("slope_std"),
                "primal effect, conditional": record.get("conditional_slope_std")}
            flags.append(conditional < plain and (record.get("conditional_slope_std") or 0.0) > 0)
    if rows:
        table = pd.DataFrame.from_dict(rows, orient="index")
        section.tables.append(("Conditional manipulation: the conditioned attribute's mean |change| at ±α_max "
                               "(held-out std) and the primal attribute's effect (std per unit α), before and after "
                               "projection", table))
        section.findings.append(Finding(
            claims[2], paper_texts[2],
            "; ".join(f"{k}: {_fmt(v.iloc[0])} → {_fmt(v.iloc[1])}" for k, v in table.iterrows()),
            _verdict(flags),
            "Projection holds an attribute only as far as it is linear along its own boundary; a labeler that "
            "reads the conditioned attribute off other cues still sees it move."))
    else:
        section.findings.append(_missing(claims[2], paper_texts[2], "needs eval.condition_on (e.g. [male])"))
    return section


# ----------------------------------------------------------------------------------------------------- TunaGAN


def _tunagan_key(entry: Entry) -> str:
    return f"{entry.fit_params.get('model', 'nonlinear')} {entry.directions.space}"


def tunagan_section(entries: dict[str, Entry], latent_spaces: list[str]) -> PaperSection:
    """Separability scores (nonlinear vs linear, W vs Z) and the edits of the nonlinear models (gradient paths)
    against the linear ones."""
    section = PaperSection(TUNAGAN, "Linear (logistic / least squares) and 2-layer MLP models latent → attribute; "
                                    "separability score SS = exp(H(Y | Ŷ)) (1 = separable; 2 = chance for a binary "
                                    "attribute); nonlinear edits follow the MLP's gradient per sample.")
    found = {}
    for entry in _by_base(entries, "tunagan", "tunagan-linear"):
        found.setdefault(_tunagan_key(entry), entry)
    paper = PAPER_TABLES["tunagan_table_1"]
    claims = ("Nonlinear models separate the attributes better than linear ones (lower SS)",
              "W is more separable than Z (lower SS)",
              "Nonlinear (gradient-path) traversal edits better than linear traversal (less collateral change per "
              "unit of effect)")
    paper_texts = (f"overall SS {paper.loc['linear z', 'Overall']:.2f} → {paper.loc['nonlinear z', 'Overall']:.2f} (Z), "
                   f"{paper.loc['linear w', 'Overall']:.2f} → {paper.loc['nonlinear w', 'Overall']:.2f} (W)",
                   f"overall SS Z {paper.loc['linear z', 'Overall']:.2f} → W {paper.loc['linear w', 'Overall']:.2f} "
                   f"(linear), {paper.loc['nonlinear z', 'Overall']:.2f} → {paper.loc['nonlinear w', 'Overall']:.2f} "
                   f"(nonlinear)",
                   "qualitative (Fig. 8)")
    if not found:
        section.findings = [_missing(c, p, "needs tunagan / tunagan-linear entries") for c, p in zip(claims, paper_texts)]
        return section
    common = sorted(set.intersection(*(set(e.directions.names) for e in found.values())),
                    key=lambda n: next(iter(found.values())).directions.names.index(n))
    rows = {}
    for key, entry in sorted(found.items()):
        scores = {n: entry.directions.stats[n]["separability"] for n in common}
        rows[f"{key} ({entry.name})"] = {**scores, "overall (product)": float(np.prod(list(scores.values())))}
    table = pd.DataFrame.from_dict(rows, orient="index")
    section.tables.append(("Separability score per attribute (validation split; lower is better)", table))
    section.tables.append(("The paper's Table 1 (StyleGAN, Microsoft Face API labels)", paper))

    def overall(key: str) -> float | None:
        entry = found.get(key)
        return None if entry is None else float(np.prod([entry.directions.stats[n]["separability"] for n in common]))

    compared = [(space, overall(f"linear {space}"), overall(f"nonlinear {space}")) for space in ("z", "w")]
    compared = [(space, lin, non) for space, lin, non in compared if lin is not None and non is not None]
    section.findings.append(Finding(
        claims[0], paper_texts[0],
        "; ".join(f"overall SS {lin:.2f} → {non:.2f} ({space.upper()}, {len(common)} attributes)"
                  for space, lin, non in compared) or "not measured",
        _verdict([non < lin for _, lin, non in compared]),
        "needs a linear and a nonlinear entry in one space" if not compared else
        "Our attributes include continuous ones discretised into quantile bins for SS; the MLP's width and training "
        "are ours (the paper gives none)."))
    zw = [(model, overall(f"{model} z"), overall(f"{model} w")) for model in ("linear", "nonlinear")]
    zw = [(model, z, w) for model, z, w in zw if z is not None and w is not None]
    if zw:
        section.findings.append(Finding(claims[1], paper_texts[1],
                                        "; ".join(f"overall SS Z {z:.2f} → W {w:.2f} ({model})" for model, z, w in zw),
                                        _verdict([w < z for _, z, w in zw]),
                                        "W's advantage is a property of StyleGAN's mapping network."))
    else:
        needs = ("the generator has no W space (no mapping network): Z vs W does not apply" if "w" not in latent_spaces
                 else "add TunaGAN variants in W, e.g. fit.variants: {tunagan-w: {method: tunagan, space: w}, "
                      "tunagan-linear-w: {method: tunagan-linear, space: w}}")
        section.findings.append(_missing(claims[1], paper_texts[1], needs))

    edit_rows, flags = {}, []
    for space in ("z", "w"):
        pair = {model: found.get(f"{model} {space}") for model in ("linear", "nonlinear")}
        if any(entry is None for entry in pair.values()):
            continue
        ratios = {}
        for model, entry in pair.items():
            for attribute, record in entry.details["directions"].items():
                effect = record.get("slope_std")
                ratio = record.get("entanglement", np.nan) / max(effect, 1e-6) if effect is not None else np.nan
                edit_rows[f"{attribute}, {model} {space} ({entry.name})"] = {
                    "edit": record.get("edit", "vector"), "effect (std/α)": effect,
                    "entanglement": record.get("entanglement"), "entanglement / effect": ratio,
                    "LPIPS at ±α_max": record.get("lpips"), "PPL": record.get("ppl")}
                ratios.setdefault(model, []).append(ratio)
        if ratios.get("linear") and ratios.get("nonlinear"):
            flags.append((space, float(np.nanmean(ratios["linear"])), float(np.nanmean(ratios["nonlinear"]))))
    if edit_rows:
        section.tables.append(("Edits of held-out latents: linear (one vector) against nonlinear (each sample "
                               "follows the MLP's gradient)", pd.DataFrame.from_dict(edit_rows, orient="index")))
    section.findings.append(Finding(
        claims[2], paper_texts[2],
        "; ".join(f"mean entanglement / effect {lin:.2f} (linear) vs {non:.2f} (nonlinear) in {space.upper()}"
                  for space, lin, non in flags) or "not measured",
        _verdict([non < lin for _, lin, non in flags]),
        "needs tunagan and tunagan-linear entries in one space" if not flags else
        "A gradient path follows the MLP wherever its fit is poor too, and an attribute that is linear in the "
        "latents gains nothing from it; the paper judged the edits by eye on StyleGAN, we by re-labeling."))
    return section


# --------------------------------------------------------------------------------------------------- Lu et al.


def unsupervised_section(entries: dict[str, Entry]) -> PaperSection:
    """RCA and PPL of the centroid method (Lu et al.) against the Voynov–Babenko baseline, beside the paper's."""
    section = PaperSection(LU, "Voynov & Babenko's deformator/reconstructor training with two consecutive shifts and "
                               "a centroid loss; RCA = the reconstructor's top-1 accuracy at naming the direction "
                               "(chance 1/K), PPL = perceptual path length along the directions.")
    paper = PAPER_TABLES["lu_table_1"]
    baseline_row, ours_row = paper.index[0], paper.index[2]
    datasets = ("Anime", "ILSVRC", "FFHQ")
    claims = (f"The centroid loss keeps RCA competitive with the baseline (drop ≤ {RCA_DROP_BAR})",
              "The centroid loss lowers PPL (smoother, more consistent paths)")
    paper_texts = ("; ".join(f"{d} {paper.loc[baseline_row, f'{d} RCA']:.2f} → {paper.loc[ours_row, f'{d} RCA']:.2f}"
                             for d in datasets),
                   "; ".join(f"{d} {paper.loc[baseline_row, f'{d} PPL']:.1f} → {paper.loc[ours_row, f'{d} PPL']:.1f}"
                             for d in datasets))
    section.tables.append(("The paper's Table 1 (K = 128, 2·10⁵ steps, PPL with VGG16 LPIPS)", paper))
    voynov, centroid = _by_base(entries, "voynov"), _by_base(entries, "centroid")
    if not voynov or not centroid:
        section.findings = [_missing(c, p, "needs a voynov and a centroid entry") for c, p in zip(claims, paper_texts)]
        return section
    rows = {}
    for entry in (voynov[0], centroid[0]):
        meta = entry.directions.meta
        rows[f"{entry.name} ({entry.base_method})"] = {
            "K": meta.get("n_directions"), "chance": meta.get("rca_chance"), "steps": meta.get("steps"),
            "RCA": meta.get("rca"), "PPL (all K, training ε)": meta.get("ppl_mean"),
            "PPL (evaluated directions, ±α)": entry.details.get("summary", {}).get("ppl")}
    table = pd.DataFrame.from_dict(rows, orient="index")
    section.tables.append(("Ours (same generator, same settings for both)", table))
    (base_rca, base_ppl), (our_rca, our_ppl) = ((r["RCA"], r["PPL (all K, training ε)"]) for r in rows.values())
    scale = ("Ours: the K, steps and LPIPS net in the table above (the default: K = 16, 300 steps on a CPU, "
             "LPIPS-AlexNet at 64 px); the paper: K = 128, 2·10⁵ steps, VGG16. Compare the relation, not the values.")
    section.findings = [
        Finding(claims[0], paper_texts[0], f"RCA {base_rca:.2f} → {our_rca:.2f} (chance {rows[next(iter(rows))]['chance']:.2f})",
                _verdict([our_rca >= base_rca - RCA_DROP_BAR]), scale),
        Finding(claims[1], paper_texts[1], f"PPL {base_ppl:.4g} → {our_ppl:.4g}", _verdict([our_ppl < base_ppl]),
                scale + " A short training run leaves both deformators near their initialisation."),
    ]
    return section


# ------------------------------------------------------------------------------------------------------ output


def build_reproduction(entries: dict[str, Entry], label_correlation: pd.DataFrame, latent_spaces: list[str],
                       reference_attribute: str | None = None) -> list[PaperSection]:
    """Every paper's section, from the run's entries (see the module docstring).

    Args:
        entries: every evaluated directions set by name.
        label_correlation: (A, A) Pearson correlation of the labels on the synthesized data, indexed by attribute.
        latent_spaces: the latent spaces the data holds (``["z"]``, or ``["z", "w"]`` for a generator with W).
        reference_attribute: the attribute whose edit the orthogonality tables follow (None: the first evaluated).
    """
    return [ortho_linear_section(entries, reference_attribute), interfacegan_section(entries, label_correlation),
            tunagan_section(entries, latent_spaces), unsupervised_section(entries)]


def findings_table(sections: list[PaperSection]) -> pd.DataFrame:
    """One row per finding: paper, claim, paper's number, ours, verdict, note."""
    return pd.DataFrame([{"paper": s.paper, "claim": f.claim, "paper's number": f.paper, "ours": f.ours,
                          "holds here": f.verdict, "note": f.note} for s in sections for f in s.findings])


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: list[PaperSection], header: str) -> str:
    """REPRODUCTION.md: the header, a summary of every finding, then each paper's tables and findings."""
    lines = ["# Reproduction", "", header, "", "| paper | claim | holds here |", "|---|---|---|"]
    for section in sections:
        for finding in section.findings:
            lines.append(f"| {_cell(section.paper.split(',')[0])} | {_cell(finding.claim)} | {finding.verdict} |")
    for section in sections:
        lines += ["", f"## {section.paper}", "", section.summary, "",
                  "| claim | paper | ours | holds here | note |", "|---|---|---|---|---|"]
        for f in section.findings:
            lines.append(f"| {_cell(f.claim)} | {_cell(f.paper)} | {_cell(f.ours)} | **{f.verdict}** | {_cell(f.note)} |")
        for title, table in section.tables:
            lines += ["", f"**{title}**", "", table.to_markdown(floatfmt=".3f")]
    return "\n".join(lines) + "\n"


def render_html(sections: list[PaperSection], header: str) -> str:
    """The report's "Reproduction" section (HTML fragment)."""
    parts = [f"<h2 id='reproduction'>Reproduction</h2><p>{html.escape(header)}</p>"]
    for section in sections:
        rows = "".join(f"<tr><td>{html.escape(f.claim)}</td><td>{html.escape(f.paper)}</td><td>{html.escape(f.ours)}"
                       f"</td><td><b>{html.escape(f.verdict)}</b></td><td>{html.escape(f.note)}</td></tr>"
                       for f in section.findings)
        parts.append(f"<h3>{html.escape(section.paper)}</h3><p>{html.escape(section.summary)}</p><table><tr>"
                     f"<th>claim</th><th>paper</th><th>ours</th><th>holds here</th><th>note</th></tr>{rows}</table>")
        for title, table in section.tables:
            parts.append(f"<h4>{html.escape(title)}</h4>" + table.to_html(float_format="{:.3f}".format, na_rep="–"))
    return "".join(parts)
