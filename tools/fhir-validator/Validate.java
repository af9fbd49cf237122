// Validates FHIR R4 JSON files against the specification's own StructureDefinitions and
// value sets (HAPI FHIR's instance validator, offline). Prints each file's verdict and its
// errors and warnings; exits 1 when any file has an error.
//
//   java -cp '.tools/fhir-validator/lib/*' tools/fhir-validator/Validate.java FILE...

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class Validate {
  public static void main(String[] args) throws Exception {
    FhirContext ctx = FhirContext.forR4();
    ValidationSupportChain support = new ValidationSupportChain(
        new DefaultProfileValidationSupport(ctx),
        new CommonCodeSystemsTerminologyService(ctx),
        new InMemoryTerminologyServerValidationSupport(ctx),
        new SnapshotGeneratingValidationSupport(ctx));
    FhirValidator validator = ctx.newValidator().registerValidatorModule(new FhirInstanceValidator(support));
    int failed = 0;
    for (String file : args) {
      ValidationResult result = validator.validateWithResult(Files.readString(Path.of(file)));
      long errors = result.getMessages().stream()
          .filter(m -> m.getSeverity().ordinal() >= ResultSeverityEnum.ERROR.ordinal())
          .count();
      System.out.println(file + ": " + (errors == 0 ? "VALID" : "INVALID (" + errors + " errors)"));
      for (SingleValidationMessage m : result.getMessages()) {
        if (m.getSeverity().ordinal() >= ResultSeverityEnum.WARNING.ordinal()) {
          System.out.println("  " + m.getSeverity() + " " + m.getLocationString() + ": " + m.getMessage());
        }
      }
      if (errors > 0) failed++;
    }
    System.exit(failed == 0 ? 0 : 1);
  }
}
