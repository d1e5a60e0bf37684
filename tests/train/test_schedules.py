import pytest

from jaxhw.config import ConfigError
from jaxhw.train.schedules import warmup_steps


def test_warmup_is_a_fraction_of_the_steps_and_an_epoch_stays_whole():
    assert warmup_steps(0.25, 3900) == 975
    assert warmup_steps(0.23, 480) == 110  # 110.4, rounded down
    assert warmup_steps(0.0, 100) == 0
    # one epoch of 22 (or half of 6) written as a fraction lands on the epoch boundary
    for steps_per_epoch in range(1, 2000):
        assert warmup_steps(1 / 22, 22 * steps_per_epoch) == steps_per_epoch
        assert warmup_steps(0.5 / 6, 6 * steps_per_epoch) == int(0.5 * steps_per_epoch)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_warmup_outside_zero_one_is_refused(bad):
    with pytest.raises(ConfigError, match="--warmup is a fraction"):
        warmup_steps(bad, 100)
