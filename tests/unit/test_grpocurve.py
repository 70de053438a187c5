from controller.reports.grpocurve import GRPOCurve


def test_eval_points_keep_their_interval_and_round_trip(tmp_path):
    curve = GRPOCurve()
    curve.add_reward(0, 0.5)
    curve.add_eval(0, "synthetic", 0.4, 0.33, 0.47)
    curve.add_eval(2, "synthetic", 0.5)  # no interval: a zero-width band
    again = GRPOCurve.from_dict(curve.as_dict())
    assert again.exact_match == [(0, "synthetic", 0.4, 0.33, 0.47), (2, "synthetic", 0.5, 0.5, 0.5)]
    curve.write(tmp_path)
    assert (tmp_path / "grpo_curve.png").stat().st_size > 0


def test_curves_written_before_intervals_still_load():
    old = {"rewards": [[0, 0.1]], "exact_match": [[0, "synthetic", 0.25]]}
    assert GRPOCurve.from_dict(old).exact_match == [(0, "synthetic", 0.25, 0.25, 0.25)]
