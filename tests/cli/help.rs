use crate::run;

#[tokio::test]
async fn help_lists_the_commands() {
    let (code, stdout, stderr) = run(&["--help"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    for cmd in ["serve", "demo", "check", "migrate"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{stdout}"
        );
    }
    let (code, stdout, _) = run(&["demo", "--help"], &[]).await;
    assert_eq!(code, Some(0));
    for flag in ["--rate", "--bind", "--mongodb-uri"] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
}
