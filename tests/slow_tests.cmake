# Read by ctest (TEST_INCLUDE_FILES) after the discovered tests are defined: the tests
# labelled "slow" here are the few that take seconds even in a Release build (whole-model
# perplexity, external checkers, huge matrices). The sanitizer stage of scripts/test.sh runs
# everything else (ctest -LE slow).
set(RWKV7_SLOW_TESTS
    ConvertGolden.WrittenFilesPassTheIndependentGgufCheck
    ConvertPerplexity.TinyModelQ8AndQ4
    ShippedModel.ValidationLossOnTheHeldOutTenPercentIsAtMost1_60
    SamplerFilter.MatchesBruteForceKeptSet
    InitOrtho.ApproximationForHugeMatricesHasUnitColumns
    TokenizerWorld.EncodeSpeed
    ThreadPool.ManySmallJobsUnderOversubscription
    SegmentGrad.EqualsOneShotAt4096
    DataParallel.TwoProcessesTakeTheSameStepsAsOne)  # mpirun: OpenMPI is not built for ASan
foreach(t IN LISTS RWKV7_SLOW_TESTS)
  set_tests_properties(${t} PROPERTIES LABELS slow)
endforeach()
