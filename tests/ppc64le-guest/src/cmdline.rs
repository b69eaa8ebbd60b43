//! What the command line (`/chosen/bootargs`) asks the guest to do when its report is
//! printed: the first word that names an action wins.

/// The guest's last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// RTAS `power-off` (the default).
    Poweroff,
    /// RTAS `system-reboot`.
    Reboot,
    /// RTAS `ibm,os-term`: the guest reports a terminal error.
    OsTerm,
}

impl Action {
    /// The action the command line names, [`Action::Poweroff`] when it names none.
    pub fn parse(cmdline: &str) -> Self {
        for word in cmdline.split_ascii_whitespace() {
            match word {
                "poweroff" => return Self::Poweroff,
                "reboot" => return Self::Reboot,
                "os-term" => return Self::OsTerm,
                _ => {}
            }
        }
        Self::Poweroff
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::OsTerm => "os-term",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_action_word_wins() {
        assert_eq!(Action::parse(""), Action::Poweroff);
        assert_eq!(
            Action::parse("console=hvc0 reboot poweroff"),
            Action::Reboot
        );
        assert_eq!(Action::parse("x os-term"), Action::OsTerm);
        assert_eq!(Action::parse("rebooted"), Action::Poweroff);
        assert_eq!(Action::Reboot.name(), "reboot");
    }
}
