//! Known-answer tests against scipy 1.17.1 / numpy 2.4.6.
//!
//! Every expected number below is printed by `tests/known_answers.py` (same generator, same
//! data); the output of that script is quoted next to each test.

use freshet_drift::measures::{chi_square_gof, js_distance, ks_2samp, psi, wasserstein_normed};
use freshet_drift::special::{chi_square_sf, ks_2samp_p_value};
use freshet_drift::{CategoricalConfig, CategoricalReference, NumericConfig, NumericReference};

mod common;
use common::SplitMix64;

fn normals(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
    let mut g = SplitMix64(seed);
    (0..n).map(|_| mean + sd * g.normal()).collect()
}

fn round1(v: Vec<f64>) -> Vec<f64> {
    // np.round(x, 1) rounds half to even on the scaled value; no value here sits on a half.
    v.into_iter().map(|x| (x * 10.0).round() / 10.0).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

struct Expected {
    ref_counts: &'static [u64],
    win_counts: &'static [u64],
    psi: f64,
    js: f64,
    ks_stat: f64,
    ks_p_asymp: f64,
    wasserstein_normed: f64,
}

fn check_numeric(reference: &[f64], window: &[f64], want: &Expected, ks_p_rel_tol: f64) {
    let r =
        NumericReference::from_values(reference, NumericConfig::default(), 42).expect("non-empty");
    let mut w = r.new_window(1);
    w.update_all(window);
    assert_eq!(r.counts(), want.ref_counts);
    assert_eq!(w.counts(), want.win_counts);
    let got = r.compare(&w).expect("same layout");
    assert!(
        rel(got.psi, want.psi) < 1e-12,
        "psi {} vs {}",
        got.psi,
        want.psi
    );
    assert!(
        rel(got.jensen_shannon, want.js) < 1e-9,
        "js {} vs {}",
        got.jensen_shannon,
        want.js
    );
    assert!(
        (got.ks.statistic - want.ks_stat).abs() < 1e-12,
        "ks {} vs {}",
        got.ks.statistic,
        want.ks_stat
    );
    assert!(
        rel(got.ks.p_value, want.ks_p_asymp) < ks_p_rel_tol,
        "ks p {} vs {} (rel {})",
        got.ks.p_value,
        want.ks_p_asymp,
        rel(got.ks.p_value, want.ks_p_asymp)
    );
    assert!(
        rel(got.wasserstein, want.wasserstein_normed) < 1e-9,
        "wd {} vs {}",
        got.wasserstein,
        want.wasserstein_normed
    );
    // The slice-level functions agree with the profile-level ones.
    let mut rs = reference.to_vec();
    rs.sort_by(f64::total_cmp);
    let mut ws = window.to_vec();
    ws.sort_by(f64::total_cmp);
    assert_eq!(ks_2samp(&rs, &ws).ok(), Some(got.ks));
    assert!(wasserstein_normed(&rs, &ws).is_ok_and(|v| rel(v, got.wasserstein) < 1e-12));
    assert_eq!(psi(want.ref_counts, want.win_counts).ok(), Some(got.psi));
    assert_eq!(
        js_distance(want.ref_counts, want.win_counts).ok(),
        Some(got.jensen_shannon)
    );
}

// shift: ref_counts=[100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
//        win_counts=[19, 36, 37, 47, 52, 49, 61, 75, 60, 64]
//   psi=0.11279208422114509 js=0.1410476079190979
//   ks_stat=0.138 ks_p_asymp=5.404110396575809e-06 ks_p_exact=5.750289290822541e-06
//   wasserstein_normed=0.2962822821760254
#[test]
fn numeric_mean_shift_matches_scipy() {
    check_numeric(
        &normals(1, 1000, 0.0, 1.0),
        &normals(2, 500, 0.3, 1.0),
        &Expected {
            ref_counts: &[100; 10],
            win_counts: &[19, 36, 37, 47, 52, 49, 61, 75, 60, 64],
            psi: 0.112_792_084_221_145_09,
            js: 0.141_047_607_919_097_9,
            ks_stat: 0.138,
            ks_p_asymp: 5.404_110_396_575_809e-6,
            wasserstein_normed: 0.296_282_282_176_025_4,
        },
        1e-9,
    );
}

// small_shift: ref_counts=[200, ...x10] win_counts=[87, 89, 90, 102, 114, 109, 112, 86, 93, 118]
//   psi=0.013754203627589199 js=0.0497845762787711
//   ks_stat=0.043999999999999984 ks_p_asymp=0.14668555451813825 ks_p_exact=0.14982457297868768
//   wasserstein_normed=0.05656866605196938
#[test]
fn numeric_small_shift_matches_scipy() {
    check_numeric(
        &normals(3, 2000, 0.0, 1.0),
        &normals(4, 1000, 0.08, 1.0),
        &Expected {
            ref_counts: &[200; 10],
            win_counts: &[87, 89, 90, 102, 114, 109, 112, 86, 93, 118],
            psi: 0.013_754_203_627_589_199,
            js: 0.049_784_576_278_771_1,
            ks_stat: 0.043_999_999_999_999_984,
            ks_p_asymp: 0.146_685_554_518_138_25,
            wasserstein_normed: 0.056_568_666_051_969_38,
        },
        0.02,
    );
}

// same: ref_counts=[300, ...x10] win_counts=[323, 328, 289, 270, 264, 278, 381, 270, 266, 331]
//   psi=0.014568695222883486 js=0.05122329634890031
//   ks_stat=0.021999999999999992 ks_p_asymp=0.45575998132768136 ks_p_exact=0.4622644804474408
//   wasserstein_normed=0.03604279097298216
#[test]
fn numeric_no_drift_matches_scipy() {
    check_numeric(
        &normals(5, 3000, 0.0, 1.0),
        &normals(6, 3000, 0.0, 1.0),
        &Expected {
            ref_counts: &[300; 10],
            win_counts: &[323, 328, 289, 270, 264, 278, 381, 270, 266, 331],
            psi: 0.014_568_695_222_883_486,
            js: 0.051_223_296_348_900_31,
            ks_stat: 0.021_999_999_999_999_992,
            ks_p_asymp: 0.455_759_981_327_681_36,
            wasserstein_normed: 0.036_042_790_972_982_16,
        },
        0.02,
    );
}

// ties (values rounded to 0.1): ref_counts=[77, 80, 57, 78, 78, 105, 59, 82, 103, 81]
//   win_counts=[80, 73, 28, 58, 53, 58, 37, 53, 65, 95]
//   psi=0.0715435980828823 js=0.11327036025680653
//   ks_stat=0.07124999999999992 ks_p_asymp=0.05850553380483314 ks_p_exact=0.059004725320096735
//   wasserstein_normed=0.21233896269512229
#[test]
fn numeric_with_ties_matches_scipy() {
    check_numeric(
        &round1(normals(7, 800, 0.0, 1.0)),
        &round1(normals(8, 600, 0.0, 1.3)),
        &Expected {
            ref_counts: &[77, 80, 57, 78, 78, 105, 59, 82, 103, 81],
            win_counts: &[80, 73, 28, 58, 53, 58, 37, 53, 65, 95],
            psi: 0.071_543_598_082_882_3,
            js: 0.113_270_360_256_806_53,
            ks_stat: 0.071_249_999_999_999_92,
            ks_p_asymp: 0.058_505_533_804_833_14,
            wasserstein_normed: 0.212_338_962_695_122_29,
        },
        0.02,
    );
}

// stats.chisquare([48, 35, 15, 3, 9], f_exp=[400,300,200,50,50] * 110/1000)
//   stat=6.075757575757576 p=0.19356163573557292
// stats.chisquare([1210, 980, 1015, 797], f_exp=[1000]*4 * 4002/4000)
//   stat=85.89005497251375 p=1.6714521835876623e-18
#[test]
fn chi_square_matches_scipy() {
    let t = chi_square_gof(&[400, 300, 200, 50, 50], &[48, 35, 15, 3, 9]).expect("non-empty");
    assert_eq!(t.df, 4);
    assert!(rel(t.statistic, 6.075_757_575_757_576) < 1e-12);
    assert!(rel(t.p_value, 0.193_561_635_735_572_92) < 1e-10);
    let t = chi_square_gof(&[1000; 4], &[1210, 980, 1015, 797]).expect("non-empty");
    assert!(rel(t.statistic, 85.890_054_972_513_75) < 1e-12);
    assert!(rel(t.p_value, 1.671_452_183_587_662_3e-18) < 1e-8);
}

// Published vector: Mendel's dihybrid cross (round-yellow 315, round-green 108,
// wrinkled-yellow 101, wrinkled-green 32; expected ratio 9:3:3:1), the textbook
// goodness-of-fit example: X² = 0.470, df = 3, p = 0.925.
// scipy: stats.chisquare([315,108,101,32], f_exp=[9,3,3,1]*556/16)
//   stat=0.4700239808153477 p=0.925425895103616
#[test]
fn chi_square_mendel_published_example() {
    let t = chi_square_gof(&[9, 3, 3, 1], &[315, 108, 101, 32]).expect("non-empty");
    assert_eq!(t.df, 3);
    assert!(rel(t.statistic, 0.470_023_980_815_347_7) < 1e-12);
    assert!(rel(t.p_value, 0.925_425_895_103_616) < 1e-10);
}

// Published vector: Evidently's chi-square stattest tests (`test_freq_obs_eq_freq_exp` and
// `test_freq_obs_not_eq_freq_exp` in evidently's tests/stattests): reference categories 1..6
// with counts [16, 18, 16, 14, 12, 12] (and the same doubled), current [16, 16, 16, 16, 16, 8]:
// p = 0.67309 (to 1e-5) both times, because the reference enters as proportions only.
// X² = 4/18 + 4/14 + 16/12 + 16/12 = 200/63, df = 5. Identical counts give p = 1.
#[test]
fn chi_square_evidently_published_vectors() {
    for reference in [[16, 18, 16, 14, 12, 12], [32, 36, 32, 28, 24, 24]] {
        let t = chi_square_gof(&reference, &[16, 16, 16, 16, 16, 8]).expect("non-empty");
        assert_eq!(t.df, 5);
        assert!(rel(t.statistic, 200.0 / 63.0) < 1e-12, "{}", t.statistic);
        assert!((t.p_value - 0.67309).abs() < 1e-5, "{}", t.p_value);
    }
    let t = chi_square_gof(&[10, 10, 10], &[10, 10, 10]).expect("non-empty");
    assert_eq!(t.statistic, 0.0);
    assert!((t.p_value - 1.0).abs() < 1e-12);
}

// stats.chi2.sf(x, df): (150, 100) -> 0.0009039320423540184; (5000, 4000) -> 1.6633156038804178e-25
#[test]
fn chi_square_sf_matches_scipy_in_the_tails() {
    assert!(rel(chi_square_sf(150.0, 100), 0.000_903_932_042_354_018_4) < 1e-10);
    assert!(rel(chi_square_sf(5000.0, 4000), 1.663_315_603_880_417_8e-25) < 1e-7);
    assert_eq!(chi_square_sf(0.5, 30), 1.0);
}

// stats.kstwo.sf(d, round(n*m/(n+m))) — what ks_2samp(method="asymp") returns:
//   (0.05, 1000, 1000) -> 0.15866260223815387
//   (0.1, 300, 200)    -> 0.16946138370670658
//   (0.02, 100000, 20000) -> 3.1922153331823354e-06
//   (0.2, 60, 40)      -> 0.2560998009532548
//   (0.138, 1000, 500) -> 5.404110396575809e-06
// In the tail (n_e d^2 >= 2.2) the formula is scipy's own (2 * smirnov); in the centre Stephens'
// approximation stays within 2% of scipy's exact finite-n value.
#[test]
fn ks_p_value_is_close_to_scipy_asymp() {
    for (d, n, m, want, tol) in [
        (0.05, 1000, 1000, 0.158_662_602_238_153_87, 0.02),
        (0.1, 300, 200, 0.169_461_383_706_706_58, 0.02),
        (0.02, 100_000, 20_000, 3.192_215_333_182_335_4e-6, 1e-9),
        (0.138, 1000, 500, 5.404_110_396_575_809e-6, 1e-9),
        (0.2, 60, 40, 0.256_099_800_953_254_8, 0.03),
    ] {
        let got = ks_2samp_p_value(d, n, m);
        assert!(
            rel(got, want) < tol,
            "d {d} n {n} m {m}: {got} vs {want} (rel {})",
            rel(got, want)
        );
    }
}

// Categorical profile: reference a*400 b*300 c*200 d*50 e*50 with top_k = 3
// -> [400, 300, 200, other 100]; window a*48 b*35 c*15 d*3 e*9 f*4 -> [48, 35, 15, other 16].
// categorical: chisq stat=4.669590643274853 p=0.1976529045774665
//   psi=0.043568676665101516 js=0.08836211143957108
#[test]
fn categorical_profile_matches_scipy() {
    let mut reference_values = Vec::new();
    for (cat, n) in [("a", 400), ("b", 300), ("c", 200), ("d", 50), ("e", 50)] {
        reference_values.extend(std::iter::repeat_n(cat, n));
    }
    let config = CategoricalConfig {
        top_k: 3,
        ..CategoricalConfig::default()
    };
    let r = CategoricalReference::from_values(&reference_values, config).expect("non-empty");
    assert_eq!(r.counts(), &[400, 300, 200, 100]);
    let mut w = r.new_window();
    for (cat, n) in [
        ("a", 48),
        ("b", 35),
        ("c", 15),
        ("d", 3),
        ("e", 9),
        ("f", 4),
    ] {
        for _ in 0..n {
            w.update(cat);
        }
    }
    assert_eq!(w.counts(), &[48, 35, 15, 16]);
    let t = r.chi_square(&w).expect("same layout");
    assert_eq!(t.df, 3);
    assert!(rel(t.statistic, 4.669_590_643_274_853) < 1e-12);
    assert!(rel(t.p_value, 0.197_652_904_577_466_5) < 1e-10);
    assert!(r
        .psi(&w)
        .is_ok_and(|v| rel(v, 0.043_568_676_665_101_516) < 1e-12));
    assert!(r
        .js_distance(&w)
        .is_ok_and(|v| rel(v, 0.088_362_111_439_571_08) < 1e-9));
}
